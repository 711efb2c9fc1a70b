//! End to end with the real `mamori` executable (filled in below).
