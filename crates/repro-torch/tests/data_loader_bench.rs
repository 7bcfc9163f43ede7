//! Loader throughput benchmark (ignored by default; run by scripts/bench_loader.sh, which
//! puts the torchvision baseline beside it). Not a timed assertion: it prints images/s.
//!
//! `BENCH_DIR` (required): where the synthetic preprocessed set is (created if missing, with
//! `BENCH_IMAGES` images, default 1024, stored as preprocess stores them: short side 256,
//! JPEG quality 90). `BENCH_EPOCHS` (default 3) timed epochs after one warm-up epoch.

use std::path::Path;
use std::time::Instant;

use repro::data::shards::ShardWriter;
use repro_torch::loader::{Loader, LoaderConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A photo-like synthetic image: smooth colour fields, edges and mild noise.
fn synthetic(i: usize) -> image::RgbImage {
    let (w, h) = if i.is_multiple_of(3) {
        (256, 341)
    } else {
        (341 + (i % 7) as u32 * 8, 256)
    };
    let f = 1.0 + (i % 5) as f32;
    image::RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f32 / w as f32, y as f32 / h as f32);
        let n = ((x.wrapping_mul(73_856_093)
            ^ y.wrapping_mul(19_349_663)
            ^ (i as u32).wrapping_mul(83_492_791))
            % 23) as f32;
        let edge = if (xf - 0.5).powi(2) + (yf - 0.5).powi(2) < 0.08 {
            60.0
        } else {
            0.0
        };
        let r = 110.0 + 80.0 * (f * 6.0 * xf).sin() + edge + n;
        let g = 100.0 + 70.0 * (f * 4.0 * yf + xf * 3.0).cos() + n;
        let b = 90.0 + 60.0 * ((xf + yf) * f * 5.0).sin() - edge * 0.5 + n;
        image::Rgb([
            r.clamp(0.0, 255.0) as u8,
            g.clamp(0.0, 255.0) as u8,
            b.clamp(0.0, 255.0) as u8,
        ])
    })
}

fn build(dir: &Path, n: usize) {
    let classes = 10;
    let mut w = ShardWriter::new(&dir.join("train"), 64 << 20).unwrap();
    for i in 0..n {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&synthetic(i))
            .unwrap();
        w.push(&jpeg, (i % classes) as i64).unwrap();
    }
    w.finish().unwrap();
    let names: Vec<String> = (0..classes).map(|c| format!("class_{c}")).collect();
    std::fs::write(
        dir.join("classes.json"),
        serde_json::to_vec(&names).unwrap(),
    )
    .unwrap();
}

#[test]
#[ignore = "benchmark: run scripts/bench_loader.sh"]
fn loader_throughput() {
    let dir = std::env::var("BENCH_DIR").expect("set BENCH_DIR");
    let dir = Path::new(&dir);
    if !dir.join("train/index.safetensors").exists() {
        build(dir, env("BENCH_IMAGES", 1024));
    }
    let workers = env("BENCH_WORKERS", 2);
    let epochs = env("BENCH_EPOCHS", 3);
    for (name, augment) in [
        ("train (random resized crop + flip)", true),
        ("test (resize + centre crop)", false),
    ] {
        let cfg = LoaderConfig {
            batch_size: 64,
            image_size: 224,
            train_augment: augment,
            shuffle: Some(true),
            seed: 0,
            workers,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(dir, "train", cfg).unwrap();
        for b in loader.epoch(0) {
            let _ = b.unwrap();
        }
        let t = Instant::now();
        let mut n = 0usize;
        for e in 1..=epochs as u64 {
            for b in loader.epoch(e) {
                n += b.unwrap().1.size()[0] as usize;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "BENCH rust {name}: {n} images in {secs:.2} s = {:.1} images/s",
            n as f64 / secs
        );
    }
}
