//! Defenses, one file per method: [`patcher`] (sequential reference) and [`parallel`]
//! (the parallel algorithm over [`collective`] all-reduces).

pub mod patcher;
pub mod collective;
pub mod parallel;
