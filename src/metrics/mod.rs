//! (placeholder: filled by the metrics issue)
pub fn cli_eval(_args: &crate::cli::EvalArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
