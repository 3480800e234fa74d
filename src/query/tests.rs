//! Engine-level tests over a real storage: placeholder until storage lands.
