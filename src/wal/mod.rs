//! The write-ahead log (being built for the durability issue; not wired into the
//! server yet). `format` is the on-disk layout and its checks, as pure functions.

pub mod format;

#[cfg(test)]
mod tests;
