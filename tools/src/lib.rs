//! Host tools for nanostar.
