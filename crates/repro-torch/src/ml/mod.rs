//! The experimental core: the twelve losses of Table I (`loss`), feature extractors
//! (`models`), in-memory data and batches (`data`), SGD with cosine decay (`sgd`) and the
//! training run that writes a model, test-set logits and a training record (`train`).
//!
//! Nothing here knows about the pipeline engine; the `train` stage kind
//! (`kinds::train`) turns a stage's parameters into a [`train::TrainConfig`] and calls
//! [`train::run`]. `repro doctor` ([`doctor`]) reports what libtorch this binary runs on.

pub mod data;
pub mod io;
pub mod loss;
pub mod models;
pub mod sgd;
pub mod train;

use std::path::PathBuf;

/// The directory of the libtorch this process loaded, found from the process's own memory
/// map (so it is the library actually in use, whatever the rpath or environment said).
pub fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so") || p.contains("/libtorch_cpu.so."))
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.to_path_buf()))
}

/// The CPU's model name as the kernel reports it (`model name` in /proc/cpuinfo, e.g.
/// `Intel(R) Xeon(R) Processor`; on Arm, where there is none, the implementer/part line), or
/// "unknown". Recorded with each run: the same seed on another CPU gives slightly different
/// numbers (other SIMD kernels and summation orders), and the report says which CPU ran what.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model_from(&text).unwrap_or_else(|| "unknown".into())
}

/// The model name in the text of /proc/cpuinfo (first processor).
pub fn cpu_model_from(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    };
    field("model name").or_else(|| {
        let imp = field("CPU implementer")?;
        let part = field("CPU part").unwrap_or_default();
        Some(format!("CPU implementer {imp}, part {part}"))
    })
}

/// The libtorch version, e.g. `2.11.0+cu130`: read from the PyPI wheel's `torch/version.py`
/// or a libtorch archive's `build-version`, next to the loaded library; "unknown" otherwise.
pub fn libtorch_version() -> String {
    // Make sure libtorch is loaded and mapped before looking.
    let _ = tch::utils::has_cuda();
    let Some(lib) = libtorch_dir() else {
        return "unknown".into();
    };
    let root = lib.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return text.trim().to_string();
    }
    "unknown".into()
}

/// `repro doctor`: libtorch version and location, CPU threads, CUDA/cuDNN availability and the
/// visible devices. Exit code 0 always (it is a report, not a check).
pub fn doctor() -> anyhow::Result<i32> {
    println!("libtorch        {}", libtorch_version());
    println!(
        "libtorch path   {}",
        libtorch_dir().map_or("(not found in the process map)".into(), |p| p
            .display()
            .to_string())
    );
    println!("CPU threads     {}", tch::get_num_threads());
    println!(
        "MKL / OpenMP    {} / {}",
        tch::utils::has_mkl(),
        tch::utils::has_openmp()
    );
    // Linked CUDA support shows as libtorch_cuda.so in the process map, driver or not.
    let cuda_lib =
        std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"));
    println!(
        "libtorch_cuda   {}",
        if cuda_lib {
            "loaded (CUDA build)"
        } else {
            "not loaded (CPU-only build)"
        }
    );
    let cuda = tch::Cuda::is_available();
    println!("CUDA available  {cuda}");
    if cuda {
        let n = tch::Cuda::device_count();
        println!("CUDA devices    {n}");
        let v = tch::utils::version_cudart();
        println!("CUDA runtime    {}.{}", v / 1000, (v % 1000) / 10);
        println!("cuDNN available {}", tch::Cuda::cudnn_is_available());
        if tch::Cuda::cudnn_is_available() {
            println!("cuDNN version   {}", tch::utils::version_cudnn());
        }
        for i in 0..n {
            // A small allocation proves the device is usable, not just enumerated.
            let ok = tch::Tensor::ones([1], (tch::Kind::Float, tch::Device::Cuda(i as usize)))
                .sum(tch::Kind::Float)
                .double_value(&[])
                == 1.0;
            println!(
                "  cuda:{i}        {}",
                if ok { "usable" } else { "allocation failed" }
            );
        }
    } else {
        println!("cuDNN available false");
    }
    Ok(0)
}

#[cfg(test)]
mod cpu_tests {
    use super::cpu_model_from;

    #[test]
    fn cpu_model_is_read_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            cpu_model_from(x86).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(
            cpu_model_from(arm).as_deref(),
            Some("CPU implementer 0x41, part 0xd0c")
        );
        assert_eq!(cpu_model_from(""), None);
    }
}
