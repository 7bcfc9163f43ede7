//! Image decoding and the per-sample transforms of training and testing, done in one
//! resampling pass straight into a normalised CHW f32 buffer.
//!
//! - training: random resized crop (area 8–100 %, aspect 3/4–4/3, as in torchvision's
//!   `RandomResizedCrop`) to `size`×`size`, then a horizontal flip with probability ½;
//! - testing: resize the short side to `resize` and take the centre `size`×`size` crop.
//!
//! Resampling is separable with a triangle (bilinear) kernel widened by the scale factor when
//! shrinking, so downscaling is antialiased like PIL's; the crop box may be fractional.

use anyhow::{Context, Result};
use image::RgbImage;
use rand::Rng;

/// ImageNet channel means and standard deviations (RGB), the normalisation of the paper's
/// torchvision pipelines.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Decode JPEG (or PNG) bytes to 8-bit RGB, converting grey and CMYK.
pub fn decode(bytes: &[u8]) -> Result<RgbImage> {
    Ok(image::load_from_memory(bytes)
        .context("decoding image")?
        .to_rgb8())
}

/// A crop box in source pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// torchvision's `RandomResizedCrop` box: scale (0.08, 1), ratio (3/4, 4/3), ten tries, then
/// a centre crop with the ratio clamped.
pub fn random_resized_crop<R: Rng>(w: u32, h: u32, rng: &mut R) -> CropBox {
    let (wf, hf) = (w as f32, h as f32);
    let area = wf * hf;
    let (lr0, lr1) = ((3.0f32 / 4.0).ln(), (4.0f32 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(0.08f32..=1.0);
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= wf && ch <= hf {
            let x = rng.gen_range(0..=(w - cw as u32)) as f32;
            let y = rng.gen_range(0..=(h - ch as u32)) as f32;
            return CropBox { x, y, w: cw, h: ch };
        }
    }
    let ratio = wf / hf;
    let (cw, ch) = if ratio < 3.0 / 4.0 {
        (wf, (wf / (3.0 / 4.0)).round().min(hf))
    } else if ratio > 4.0 / 3.0 {
        ((hf * 4.0 / 3.0).round().min(wf), hf)
    } else {
        (wf, hf)
    };
    CropBox {
        x: ((wf - cw) / 2.0).floor(),
        y: ((hf - ch) / 2.0).floor(),
        w: cw,
        h: ch,
    }
}

/// The box that "resize short side to `resize`, centre crop `size`" takes from a w×h image.
pub fn center_crop(w: u32, h: u32, resize: u32, size: u32) -> CropBox {
    let scale = resize as f32 / w.min(h) as f32;
    let side_w = (size as f32 / scale).min(w as f32);
    let side_h = (size as f32 / scale).min(h as f32);
    CropBox {
        x: (w as f32 - side_w) / 2.0,
        y: (h as f32 - side_h) / 2.0,
        w: side_w,
        h: side_h,
    }
}

/// Filter taps of one axis: output i reads `weights[i*taps..]` from source `start[i]..`.
struct Axis {
    start: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

fn axis(in_len: usize, src0: f32, src_len: f32, out_len: usize) -> Axis {
    let scale = src_len / out_len as f32;
    let support = scale.max(1.0);
    let max_taps = (2.0 * support).ceil() as usize + 1;
    // First pass: weights with `max_taps` slots; then trim the zero taps at both ends so an
    // unscaled, pixel-aligned crop costs one tap per pixel.
    let mut start = Vec::with_capacity(out_len);
    let mut full = vec![0f32; out_len * max_taps];
    for i in 0..out_len {
        let center = src0 + (i as f32 + 0.5) * scale;
        let lo = ((center - support).floor().max(0.0) as usize).min(in_len.saturating_sub(1));
        let hi = ((center + support).ceil() as usize).min(in_len);
        let w = &mut full[i * max_taps..(i + 1) * max_taps];
        let mut sum = 0.0;
        for (k, j) in (lo..hi).take(max_taps).enumerate() {
            let d = (j as f32 + 0.5 - center).abs() / support;
            let v = (1.0 - d).max(0.0);
            w[k] = v;
            sum += v;
        }
        if sum > 0.0 {
            w.iter_mut().for_each(|v| *v /= sum);
        } else {
            w[0] = 1.0; // box narrower than a pixel: nearest
        }
        start.push(lo);
    }
    let first_nz = |w: &[f32]| w.iter().position(|&v| v != 0.0).unwrap_or(0);
    let last_nz = |w: &[f32]| w.iter().rposition(|&v| v != 0.0).unwrap_or(0);
    let taps = (0..out_len)
        .map(|i| {
            let w = &full[i * max_taps..(i + 1) * max_taps];
            last_nz(w) - first_nz(w) + 1
        })
        .max()
        .unwrap_or(1);
    let mut weights = vec![0f32; out_len * taps];
    for i in 0..out_len {
        let w = &full[i * max_taps..(i + 1) * max_taps];
        let f = first_nz(w).min(max_taps - taps);
        start[i] += f;
        weights[i * taps..(i + 1) * taps].copy_from_slice(&w[f..f + taps]);
    }
    Axis {
        start,
        taps,
        weights,
    }
}

/// Resample `bx` of `src` to out_w×out_h, optionally mirrored, normalised with `MEAN`/`STD`,
/// into `dst` as CHW (length 3·out_h·out_w).
pub fn resample_into(
    src: &RgbImage,
    bx: CropBox,
    out_w: usize,
    out_h: usize,
    flip: bool,
    dst: &mut [f32],
) {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let ax = axis(w, bx.x, bx.w, out_w);
    let ay = axis(h, bx.y, bx.h, out_h);
    let row0 = ay.start[0];
    let row1 = (ay.start[out_h - 1] + ay.taps).min(h);
    let raw = src.as_raw();
    // Horizontal pass over the rows the vertical taps will read.
    let mut tmp = vec![0f32; (row1 - row0) * out_w * 3];
    for r in row0..row1 {
        let line = &raw[r * w * 3..(r + 1) * w * 3];
        let out = &mut tmp[(r - row0) * out_w * 3..(r - row0 + 1) * out_w * 3];
        for x in 0..out_w {
            let s = ax.start[x];
            let wt = &ax.weights[x * ax.taps..(x + 1) * ax.taps];
            let (mut a, mut b, mut c) = (0f32, 0f32, 0f32);
            for (k, &wk) in wt.iter().enumerate() {
                let j = s + k;
                if j >= w {
                    break;
                }
                let p = &line[j * 3..j * 3 + 3];
                a += wk * p[0] as f32;
                b += wk * p[1] as f32;
                c += wk * p[2] as f32;
            }
            out[x * 3] = a;
            out[x * 3 + 1] = b;
            out[x * 3 + 2] = c;
        }
    }
    // Vertical pass, normalise, write planar.
    let plane = out_w * out_h;
    let k: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * STD[c]));
    let m: [f32; 3] = std::array::from_fn(|c| MEAN[c] / STD[c]);
    let mut acc = vec![0f32; out_w * 3];
    for y in 0..out_h {
        acc.iter_mut().for_each(|v| *v = 0.0);
        let s = ay.start[y];
        for (t, &wt) in ay.weights[y * ay.taps..(y + 1) * ay.taps]
            .iter()
            .enumerate()
        {
            let r = s + t;
            if r >= row1 || wt == 0.0 {
                continue;
            }
            let line = &tmp[(r - row0) * out_w * 3..(r - row0 + 1) * out_w * 3];
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += wt * v;
            }
        }
        for x in 0..out_w {
            let ox = if flip { out_w - 1 - x } else { x };
            for c in 0..3 {
                dst[c * plane + y * out_w + ox] = acc[x * 3 + c] * k[c] - m[c];
            }
        }
    }
}

/// Resize so the short side is `short` pixels (antialiased), keeping the aspect ratio.
pub fn resize_short_side(img: &RgbImage, short: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            short,
            ((h as f64 * short as f64 / w as f64).round() as u32).max(1),
        )
    } else {
        (
            ((w as f64 * short as f64 / h as f64).round() as u32).max(1),
            short,
        )
    };
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn constant_image_normalises_to_the_expected_value() {
        let img = RgbImage::from_pixel(50, 40, image::Rgb([255, 128, 0]));
        let mut dst = vec![0f32; 3 * 16 * 16];
        resample_into(&img, center_crop(50, 40, 20, 16), 16, 16, false, &mut dst);
        let want = [
            (1.0 - MEAN[0]) / STD[0],
            (128.0 / 255.0 - MEAN[1]) / STD[1],
            -MEAN[2] / STD[2],
        ];
        for c in 0..3 {
            for v in &dst[c * 256..(c + 1) * 256] {
                assert!(
                    (v - want[c]).abs() < 1e-4,
                    "channel {c}: {v} vs {}",
                    want[c]
                );
            }
        }
    }

    #[test]
    fn an_unscaled_aligned_crop_copies_pixels() {
        let img = RgbImage::from_fn(30, 20, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 11) as u8, (x ^ y) as u8])
        });
        let mut dst = vec![0f32; 3 * 16 * 16];
        resample_into(
            &img,
            CropBox {
                x: 3.0,
                y: 2.0,
                w: 16.0,
                h: 16.0,
            },
            16,
            16,
            false,
            &mut dst,
        );
        for c in 0..3 {
            for y in 0..16 {
                for x in 0..16 {
                    let p = img.get_pixel(x as u32 + 3, y as u32 + 2)[c] as f32;
                    let want = (p / 255.0 - MEAN[c]) / STD[c];
                    assert!((dst[c * 256 + y * 16 + x] - want).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn flip_mirrors_a_horizontal_ramp() {
        let img = RgbImage::from_fn(32, 32, |x, _| image::Rgb([(x * 8) as u8, 0, 0]));
        let bx = CropBox {
            x: 0.0,
            y: 0.0,
            w: 32.0,
            h: 32.0,
        };
        let (mut a, mut b) = (vec![0f32; 3 * 32 * 32], vec![0f32; 3 * 32 * 32]);
        resample_into(&img, bx, 32, 32, false, &mut a);
        resample_into(&img, bx, 32, 32, true, &mut b);
        for x in 0..32 {
            assert!((a[5 * 32 + x] - b[5 * 32 + 31 - x]).abs() < 1e-5);
        }
        assert!(a[5 * 32] < a[5 * 32 + 31]);
    }

    #[test]
    fn random_crops_stay_inside_and_vary() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let b = random_resized_crop(300, 200, &mut rng);
            assert!(
                b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= 300.0 && b.y + b.h <= 200.0,
                "{b:?}"
            );
            let r = b.w / b.h;
            assert!(r > 0.7 && r < 1.4, "{b:?}");
            seen.insert((b.w as u32, b.h as u32));
        }
        assert!(seen.len() > 50);
        let c = center_crop(300, 200, 256, 224);
        assert!(
            (c.w - 175.0).abs() < 0.01 && (c.x - 62.5).abs() < 0.01,
            "{c:?}"
        );
    }
}
