pub(crate) mod bench;
pub(crate) mod gaen;
pub(crate) mod log;
