//! A reader for MATLAB level-5 `.mat` files (the annotation format of Oxford Flowers102,
//! Stanford Cars and Stanford Dogs), and a small writer used to build test fixtures.
//!
//! Supported: little-endian files, compressed (`miCOMPRESSED`) and plain variables, numeric
//! arrays of every class (read as f64), char arrays, cell arrays and struct arrays. Sparse
//! arrays, objects and v7.3 (HDF5) files are refused with a message.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A MATLAB value. Arrays are stored in MATLAB's column-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num {
        dims: Vec<usize>,
        data: Vec<f64>,
    },
    Char {
        dims: Vec<usize>,
        text: String,
    },
    Cell {
        dims: Vec<usize>,
        items: Vec<Value>,
    },
    /// `items[i]` holds the field values of element `i`, in the order of `fields`.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        items: Vec<Vec<Value>>,
    },
}

impl Value {
    /// Numbers of a numeric array.
    pub fn nums(&self) -> Result<&[f64]> {
        match self {
            Value::Num { data, .. } => Ok(data),
            other => bail!("expected a numeric array, found {}", other.kind()),
        }
    }

    /// Text of a char array (one row).
    pub fn text(&self) -> Result<&str> {
        match self {
            Value::Char { text, .. } => Ok(text),
            other => bail!("expected a char array, found {}", other.kind()),
        }
    }

    /// Items of a cell array.
    pub fn cells(&self) -> Result<&[Value]> {
        match self {
            Value::Cell { items, .. } => Ok(items),
            other => bail!("expected a cell array, found {}", other.kind()),
        }
    }

    /// Field `name` of every element of a struct array.
    pub fn field(&self, name: &str) -> Result<Vec<&Value>> {
        match self {
            Value::Struct { fields, items, .. } => {
                let Some(i) = fields.iter().position(|f| f == name) else {
                    bail!(
                        "struct has no field '{name}' (fields: {})",
                        fields.join(", ")
                    );
                };
                Ok(items.iter().map(|e| &e[i]).collect())
            }
            other => bail!("expected a struct array, found {}", other.kind()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Num { .. } => "a numeric array",
            Value::Char { .. } => "a char array",
            Value::Cell { .. } => "a cell array",
            Value::Struct { .. } => "a struct array",
        }
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;
const MX_DOUBLE: u8 = 6;

/// Read every variable of a `.mat` file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Value>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a readable MATLAB v5 file", path.display()))
}

/// Read one variable, with an error naming the file when it is missing.
pub fn read_var(path: &Path, name: &str) -> Result<Value> {
    let mut vars = read(path)?;
    vars.remove(name).with_context(|| {
        format!(
            "{}: no variable '{name}' (found: {})",
            path.display(),
            vars.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Value>> {
    if bytes.len() < 128 {
        bail!("shorter than the 128-byte header");
    }
    if bytes.starts_with(b"MATLAB 7.3")
        || bytes[..8] == [0x89, b'H', b'D', b'F', 0x0d, 0x0a, 0x1a, 0x0a]
    {
        bail!("MATLAB v7.3 (HDF5) files are not supported; re-save with -v7");
    }
    match &bytes[126..128] {
        b"IM" => {}
        b"MI" => bail!("big-endian .mat files are not supported"),
        _ => bail!("missing the 'IM' endian marker at byte 126"),
    }
    let mut out = BTreeMap::new();
    let mut pos = 128;
    while pos + 8 <= bytes.len() {
        let (ty, data, next) = element(bytes, pos)?;
        pos = next;
        let owned;
        let (ty, data) = if ty == MI_COMPRESSED {
            let mut buf = Vec::new();
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut buf)
                .context("inflating")?;
            owned = buf;
            let (t, d, _) = element(&owned, 0)?;
            (t, d)
        } else {
            (ty, data)
        };
        if ty != MI_MATRIX {
            continue;
        }
        if data.is_empty() {
            continue;
        }
        let (name, value) = matrix(data)?;
        out.insert(name, value);
    }
    Ok(out)
}

/// One data element at `pos`: (type, payload, position after it, padded to 8 bytes).
fn element(b: &[u8], pos: usize) -> Result<(u32, &[u8], usize)> {
    let word = |p: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            b.get(p..p + 4)
                .context("truncated tag")?
                .try_into()
                .unwrap(),
        ))
    };
    let first = word(pos)?;
    if first >> 16 != 0 {
        // Small data element: type and size packed in 4 bytes, data in the next 4.
        let (ty, n) = (first & 0xffff, (first >> 16) as usize);
        let data = b
            .get(pos + 4..pos + 4 + n)
            .context("truncated small element")?;
        return Ok((ty, data, pos + 8));
    }
    let n = word(pos + 4)? as usize;
    let data = b.get(pos + 8..pos + 8 + n).context("truncated element")?;
    let next = if first == MI_COMPRESSED {
        pos + 8 + n
    } else {
        pos + 8 + n.div_ceil(8) * 8
    };
    Ok((first, data, next))
}

fn numbers(ty: u32, d: &[u8]) -> Result<Vec<f64>> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect()
        };
    }
    Ok(match ty {
        MI_INT8 => d.iter().map(|&v| v as i8 as f64).collect(),
        MI_UINT8 | MI_UTF8 => d.iter().map(|&v| v as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 | MI_UTF16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        other => bail!("unsupported numeric data type {other}"),
    })
}

/// Parse the payload of an miMATRIX element into (name, value).
fn matrix(d: &[u8]) -> Result<(String, Value)> {
    let (_, flags, p) = element(d, 0)?;
    let class = *flags.first().context("empty array flags")?;
    let (_, dims_raw, p) = element(d, p)?;
    let dims: Vec<usize> = numbers(MI_INT32, dims_raw)?
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let (_, name_raw, mut p) = element(d, p)?;
    let name = String::from_utf8_lossy(name_raw).into_owned();
    let n: usize = dims.iter().product();
    let value = match class {
        MX_CELL => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let (ty, sub, next) = element(d, p)?;
                p = next;
                if ty != MI_MATRIX {
                    bail!("cell item is not a matrix (type {ty})");
                }
                items.push(if sub.is_empty() {
                    empty()
                } else {
                    matrix(sub)?.1
                });
            }
            Value::Cell { dims, items }
        }
        MX_STRUCT => {
            let (_, len_raw, next) = element(d, p)?;
            let len = *numbers(MI_INT32, len_raw)?
                .first()
                .context("field name length")? as usize;
            let (_, names_raw, next) = element(d, next)?;
            p = next;
            let fields: Vec<String> = names_raw
                .chunks(len.max(1))
                .map(|c| {
                    String::from_utf8_lossy(c)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .filter(|s| !s.is_empty())
                .collect();
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let mut row = Vec::with_capacity(fields.len());
                for _ in &fields {
                    let (ty, sub, next) = element(d, p)?;
                    p = next;
                    if ty != MI_MATRIX {
                        bail!("struct field is not a matrix (type {ty})");
                    }
                    row.push(if sub.is_empty() {
                        empty()
                    } else {
                        matrix(sub)?.1
                    });
                }
                items.push(row);
            }
            Value::Struct {
                dims,
                fields,
                items,
            }
        }
        MX_CHAR => {
            let (ty, raw, _) = element(d, p)?;
            let codes = numbers(ty, raw)?;
            let text = if ty == MI_UTF8 {
                String::from_utf8_lossy(raw).into_owned()
            } else {
                // Column-major: for a multi-row array, read row by row.
                let rows = dims.first().copied().unwrap_or(1).max(1);
                let cols = codes.len() / rows;
                let mut s = String::new();
                for r in 0..rows {
                    if r > 0 {
                        s.push('\n');
                    }
                    for c in 0..cols {
                        s.push(char::from_u32(codes[c * rows + r] as u32).unwrap_or('?'));
                    }
                }
                s
            };
            Value::Char { dims, text }
        }
        6..=15 => {
            let (ty, raw, _) = element(d, p)?;
            Value::Num {
                dims,
                data: numbers(ty, raw)?,
            }
        }
        other => bail!("variable '{name}': unsupported array class {other} (sparse or object)"),
    };
    Ok((name, value))
}

fn empty() -> Value {
    Value::Num {
        dims: vec![0, 0],
        data: vec![],
    }
}

// ---- writer (fixtures) ----

fn put_element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend((ty).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

fn matrix_bytes(name: &str, v: &Value) -> Vec<u8> {
    let mut m = Vec::new();
    let (class, dims) = match v {
        Value::Num { dims, .. } => (MX_DOUBLE, dims),
        Value::Char { dims, .. } => (MX_CHAR, dims),
        Value::Cell { dims, .. } => (MX_CELL, dims),
        Value::Struct { dims, .. } => (MX_STRUCT, dims),
    };
    let mut flags = vec![0u8; 8];
    flags[0] = class;
    put_element(&mut m, MI_UINT32, &flags);
    let dims_b: Vec<u8> = dims
        .iter()
        .flat_map(|&d| (d as i32).to_le_bytes())
        .collect();
    put_element(&mut m, MI_INT32, &dims_b);
    put_element(&mut m, MI_INT8, name.as_bytes());
    match v {
        Value::Num { data, .. } => {
            let b: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            put_element(&mut m, MI_DOUBLE, &b);
        }
        Value::Char { text, .. } => {
            let b: Vec<u8> = text.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
            put_element(&mut m, MI_UINT16, &b);
        }
        Value::Cell { items, .. } => {
            for it in items {
                put_element(&mut m, MI_MATRIX, &matrix_bytes("", it));
            }
        }
        Value::Struct { fields, items, .. } => {
            let len = fields.iter().map(|f| f.len() + 1).max().unwrap_or(1).max(8);
            put_element(&mut m, MI_INT32, &(len as i32).to_le_bytes());
            let mut names = Vec::new();
            for f in fields {
                let mut b = f.as_bytes().to_vec();
                b.resize(len, 0);
                names.extend(b);
            }
            put_element(&mut m, MI_INT8, &names);
            for row in items {
                for it in row {
                    put_element(&mut m, MI_MATRIX, &matrix_bytes("", it));
                }
            }
        }
    }
    m
}

/// Serialise variables as a level-5 `.mat` file (each variable zlib-compressed when
/// `compress`, as MATLAB's default `-v7` does).
pub fn write(vars: &[(&str, Value)], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut header = b"MATLAB 5.0 MAT-file, written by repro test fixtures".to_vec();
    header.resize(116, b' ');
    out.extend(header);
    out.extend([0u8; 8]);
    out.extend(0x0100u16.to_le_bytes());
    out.extend(b"IM");
    for (name, v) in vars {
        let mut el = Vec::new();
        put_element(&mut el, MI_MATRIX, &matrix_bytes(name, v));
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&el).unwrap();
            let c = z.finish().unwrap();
            out.extend(MI_COMPRESSED.to_le_bytes());
            out.extend((c.len() as u32).to_le_bytes());
            out.extend(c);
        } else {
            out.extend(el);
        }
    }
    out
}

/// A 1×n double row vector.
pub fn row(data: &[f64]) -> Value {
    Value::Num {
        dims: vec![1, data.len()],
        data: data.to_vec(),
    }
}

/// A 1×n char array.
pub fn string(s: &str) -> Value {
    Value::Char {
        dims: vec![1, s.encode_utf16().count()],
        text: s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_supported_class() {
        let strukt = Value::Struct {
            dims: vec![1, 2],
            fields: vec!["class".into(), "fname".into()],
            items: vec![
                vec![row(&[3.0]), string("00001.jpg")],
                vec![row(&[7.0]), string("b.jpg")],
            ],
        };
        let cells = Value::Cell {
            dims: vec![2, 1],
            items: vec![string("a/x.jpg"), string("b/y.jpg")],
        };
        for compress in [false, true] {
            let bytes = write(
                &[
                    ("labels", row(&[1.0, 2.0, 102.0])),
                    ("annotations", strukt.clone()),
                    ("file_list", cells.clone()),
                ],
                compress,
            );
            let vars = parse(&bytes).unwrap();
            assert_eq!(vars["labels"].nums().unwrap(), &[1.0, 2.0, 102.0]);
            let a = &vars["annotations"];
            let classes: Vec<f64> = a
                .field("class")
                .unwrap()
                .iter()
                .map(|v| v.nums().unwrap()[0])
                .collect();
            assert_eq!(classes, vec![3.0, 7.0]);
            assert_eq!(a.field("fname").unwrap()[1].text().unwrap(), "b.jpg");
            assert_eq!(
                vars["file_list"].cells().unwrap()[1].text().unwrap(),
                "b/y.jpg"
            );
        }
    }

    #[test]
    fn refuses_hdf5_and_garbage() {
        let mut b = b"MATLAB 7.3 MAT-file".to_vec();
        b.resize(200, 0);
        assert!(parse(&b).unwrap_err().to_string().contains("7.3"));
        assert!(parse(&[0u8; 10]).is_err());
    }
}
