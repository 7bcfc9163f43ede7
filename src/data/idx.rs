//! IDX files (the MNIST format, used by Fashion-MNIST), gzip'd or not, and the in-memory
//! preprocessed form: `{train,test}.safetensors` with `images` (u8 [n, H, W]) and `labels`
//! (i64 [n]), written next to `classes.json` and `meta.json` by `preprocess`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A decoded IDX array: dimensions and raw u8 data (the only element type MNIST-style sets use).
#[derive(Debug)]
pub struct IdxU8 {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file of unsigned bytes (type 0x08), gzip'd or plain.
pub fn read_u8(path: &Path) -> Result<IdxU8> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut raw = Vec::with_capacity(f.metadata().map(|m| m.len() as usize).unwrap_or(0));
    BufReader::new(f).read_to_end(&mut raw)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        out
    } else {
        raw
    };
    parse_u8(&bytes).with_context(|| format!("{} is not a valid IDX file", path.display()))
}

/// Parse IDX bytes: magic `00 00 08 nd`, `nd` big-endian u32 dimensions, then the data.
pub fn parse_u8(bytes: &[u8]) -> Result<IdxU8> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("bad magic number");
    }
    if bytes[2] != 0x08 {
        bail!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        );
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        bail!("truncated header");
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        bail!(
            "dimensions {dims:?} need {n} bytes of data, found {}",
            bytes.len() - header
        );
    }
    Ok(IdxU8 {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Serialise images and labels as the in-memory dataset format.
pub fn to_safetensors(images: &IdxU8, labels: &[i64]) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let views = vec![
        (
            "images",
            TensorView::new(Dtype::U8, images.dims.clone(), &images.data)?,
        ),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![labels.len()], &label_bytes)?,
        ),
    ];
    Ok(safetensors::serialize(views, &None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend(0..6u8);
        let a = parse_u8(&b).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![0, 1, 2, 3, 4, 5]);
        b.pop();
        assert!(
            parse_u8(&b)
                .unwrap_err()
                .to_string()
                .contains("need 6 bytes")
        );
        assert!(parse_u8(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).is_err());
    }
}
