//! A minimal, restricted reader of Python's pickle format, enough for PyTorch state dicts.
//!
//! A pickle is a program for a small stack machine, and its `GLOBAL` / `REDUCE` opcodes can
//! call any Python function, which is why loading an untrusted `.pth` in Python is unsafe.
//! This reader executes nothing: it knows the opcodes of protocols 0–5 that containers,
//! numbers and strings use, and it accepts only the handful of globals that `torch.save`
//! writes for a state dict (`collections.OrderedDict`, the tensor rebuild functions and the
//! storage types), each turned into plain data here. Any other global is an error naming it.

use std::collections::HashMap;

use anyhow::{Result, bail};

/// A storage reference, as `torch.save` writes it in a persistent id.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// The storage type's dtype (`Float`, `Half`, `Long`, …).
    pub dtype: String,
    /// Key of the storage's bytes (zip entry `data/<key>`, or the legacy key).
    pub key: String,
    /// Elements in the storage.
    pub numel: usize,
}

/// A tensor as rebuilt by `torch._utils._rebuild_tensor_v2`: a view into a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The values a state-dict pickle can hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// An allowed global, before it is called.
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// A storage type seen as a persistent-id element (`torch.FloatStorage`).
    StorageType(String),
}

/// The globals a state dict may name.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(String),
}

fn global(module: &str, name: &str) -> Result<Global> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", n) if n.ends_with("Storage") && n.len() > "Storage".len() => {
            Global::StorageType(n.trim_end_matches("Storage").to_string())
        }
        _ => bail!(
            "the checkpoint refers to the Python object `{module}.{name}`, which a state dict of \
             tensors does not contain; it is not loaded (only tensors, numbers, strings and \
             containers are read)"
        ),
    })
}

enum Item {
    Mark,
    V(Value),
}

/// Read one pickle from the start of `data`; returns the value and the bytes consumed.
/// `persistent` turns a persistent id (BINPERSID) into a value (the storage reference).
pub fn load(data: &[u8], persistent: &dyn Fn(Value) -> Result<Value>) -> Result<(Value, usize)> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Item>| -> Result<Value> {
        match stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => bail!("malformed pickle: unexpected mark"),
            None => bail!("malformed pickle: stack underflow"),
        }
    };
    let pop_mark = |stack: &mut Vec<Item>| -> Result<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            match stack.pop() {
                Some(Item::V(v)) => items.push(v),
                Some(Item::Mark) => break,
                None => bail!("malformed pickle: missing mark"),
            }
        }
        items.reverse();
        Ok(items)
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO n
            }
            0x95 => {
                r.take(8)?; // FRAME length
            }
            b'.' => {
                let v = pop(&mut stack)?;
                return Ok((v, r.pos));
            }
            b'(' => stack.push(Item::Mark),
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'}' => stack.push(Item::V(Value::Dict(Vec::new()))),
            b']' => stack.push(Item::V(Value::List(Vec::new()))),
            b')' => stack.push(Item::V(Value::Tuple(Vec::new()))),
            b'J' => {
                let v = i32::from_le_bytes(r.array()?);
                stack.push(Item::V(Value::Int(v as i64)));
            }
            b'K' => {
                let v = r.u8()?;
                stack.push(Item::V(Value::Int(v as i64)));
            }
            b'M' => {
                let v = u16::from_le_bytes(r.array()?);
                stack.push(Item::V(Value::Int(v as i64)));
            }
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    stack.push(Item::V(Value::BigInt(b.to_vec())));
                    continue;
                }
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(b);
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    buf[n..].fill(0xff);
                }
                stack.push(Item::V(Value::Int(i64::from_le_bytes(buf))));
            }
            b'I' | b'L' => {
                let line = r.line()?;
                let t = line.trim_end_matches('L');
                let v = match t {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(
                        t.parse()
                            .map_err(|_| anyhow::anyhow!("pickle: bad integer '{line}'"))?,
                    ),
                };
                stack.push(Item::V(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(r.array()?);
                stack.push(Item::V(Value::Float(v)));
            }
            b'X' => {
                let n = u32::from_le_bytes(r.array()?) as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            0x8d => {
                let n = u64::from_le_bytes(r.array()?) as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            b'T' => {
                let n = u32::from_le_bytes(r.array()?) as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            b'B' => {
                let n = u32::from_le_bytes(r.array()?) as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())));
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Item::V(Value::Global(global(&module, &name)?)));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Value::Str(m), Value::Str(n)) = (module, name) else {
                    bail!("pickle: STACK_GLOBAL needs two strings")
                };
                stack.push(Item::V(Value::Global(global(&m, &n)?)));
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, top(&stack)?.clone());
            }
            b'r' => {
                let k = u32::from_le_bytes(r.array()?);
                memo.insert(k, top(&stack)?.clone());
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, top(&stack)?.clone());
            }
            b'p' => {
                let k: u32 = r.line()?.parse()?;
                memo.insert(k, top(&stack)?.clone());
            }
            b'h' => {
                let k = r.u8()? as u32;
                stack.push(Item::V(memo_get(&memo, k)?));
            }
            b'j' => {
                let k = u32::from_le_bytes(r.array()?);
                stack.push(Item::V(memo_get(&memo, k)?));
            }
            b'g' => {
                let k: u32 = r.line()?.parse()?;
                stack.push(Item::V(memo_get(&memo, k)?));
            }
            b'0' => {
                stack.pop();
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let v = top(&stack)?.clone();
                stack.push(Item::V(v));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::V(Value::Tuple(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = (0..n)
                    .map(|_| pop(&mut stack))
                    .collect::<Result<Vec<_>>>()?;
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::V(Value::List(items)));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::V(Value::Dict(pairs(items)?)));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.push(v),
                    _ => bail!("pickle: APPEND to something that is not a list"),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.extend(items),
                    _ => bail!("pickle: APPENDS to something that is not a list"),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Item::V(Value::Dict(d))) => d.push((k, v)),
                    _ => bail!("pickle: SETITEM on something that is not a dict"),
                }
            }
            b'u' => {
                let items = pairs(pop_mark(&mut stack)?)?;
                match stack.last_mut() {
                    Some(Item::V(Value::Dict(d))) => d.extend(items),
                    _ => bail!("pickle: SETITEMS on something that is not a dict"),
                }
            }
            b'b' => {
                // BUILD: object state (an OrderedDict's `_metadata`, a Parameter's hooks).
                // Nothing here has attributes that matter; the state is dropped.
                pop(&mut stack)?;
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(Item::V(call(f, args)?));
            }
            0x81 => {
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                stack.push(Item::V(call(cls, args)?));
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(Item::V(persistent(pid)?));
            }
            other => bail!(
                "pickle: opcode 0x{other:02x} at byte {} is not supported in a state dict",
                r.pos - 1
            ),
        }
    }
}

fn top(stack: &[Item]) -> Result<&Value> {
    match stack.last() {
        Some(Item::V(v)) => Ok(v),
        _ => bail!("malformed pickle: nothing to memoise"),
    }
}

fn memo_get(memo: &HashMap<u32, Value>, k: u32) -> Result<Value> {
    memo.get(&k)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("malformed pickle: memo entry {k} is not set"))
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        bail!("malformed pickle: odd number of dict items");
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn usize_of(v: &Value, what: &str) -> Result<usize> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => bail!("checkpoint: {what} should be a non-negative integer, found {other:?}"),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|i| usize_of(i, what)).collect()
        }
        other => bail!("checkpoint: {what} should be a tuple, found {other:?}"),
    }
}

/// Apply one of the allowed globals to its arguments.
fn call(f: Value, args: Value) -> Result<Value> {
    let Value::Global(g) = f else {
        bail!("pickle: REDUCE on something that is not a known global")
    };
    let Value::Tuple(args) = args else {
        bail!("pickle: REDUCE arguments are not a tuple")
    };
    match g {
        Global::OrderedDict => Ok(Value::Dict(Vec::new())),
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            if args.len() < 4 {
                bail!(
                    "checkpoint: a tensor needs (storage, offset, size, stride), found {} arguments",
                    args.len()
                );
            }
            let Value::Storage(storage) = &args[0] else {
                bail!("checkpoint: a tensor's first argument is not a storage")
            };
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: usize_of(&args[1], "storage offset")?,
                shape: usizes(&args[2], "size")?,
                stride: usizes(&args[3], "stride")?,
            }))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => bail!("checkpoint: a parameter without its tensor"),
        },
        Global::StorageType(t) => {
            bail!("checkpoint: `torch.{t}Storage` is called; only its name may appear")
        }
    }
}

impl Value {
    /// The storage type of a persistent id's type element.
    pub fn as_storage_type(&self) -> Option<&str> {
        match self {
            Value::Global(Global::StorageType(t)) | Value::StorageType(t) => Some(t),
            _ => None,
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            bail!("the pickle ends early (truncated file?)");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length"))
    }
    fn string(&mut self, n: usize) -> Result<String> {
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            bail!("the pickle ends early (truncated file?)")
        };
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pid(_: Value) -> Result<Value> {
        bail!("no persistent ids here")
    }

    #[test]
    fn reads_containers_and_numbers() {
        // pickle.dumps({'a': [1, 300, -2], 'b': (1.5, None, True)}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01M,\x01J\xfe\xff\xff\xffeX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87q\x04u.";
        let (v, n) = load(data, &no_pid).unwrap();
        assert_eq!(n, data.len());
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::List(vec![Value::Int(1), Value::Int(300), Value::Int(-2)])
                ),
                (
                    Value::Str("b".into()),
                    Value::Tuple(vec![Value::Float(1.5), Value::None, Value::Bool(true)])
                ),
            ])
        );
    }

    #[test]
    fn refuses_arbitrary_globals_and_truncation() {
        // pickle.dumps(os.system, protocol=2) names posix.system
        let e = load(b"\x80\x02cposix\nsystem\nq\x00.", &no_pid)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`posix.system`") && e.contains("not loaded"),
            "{e}"
        );
        let e = load(b"\x80\x02}q\x00(X\x05\x00\x00\x00ab", &no_pid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
