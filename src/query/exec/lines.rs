//! Read access to a scan's `line` column in either string encoding it comes in.

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringViewArray};

/// A `line` column: `Utf8` (log queries, which keep rows, and head batches) or `Utf8View`
/// (metric scans, whose Parquet reader points lines into decompressed pages instead of
/// copying them; see `LogsTable::with_line_views`).
#[derive(Clone, Copy, Debug)]
pub enum Lines<'a> {
    /// Offsets into one buffer.
    Utf8(&'a StringArray),
    /// Views into the reader's buffers.
    View(&'a StringViewArray),
}

impl<'a> Lines<'a> {
    /// The column as lines, `None` for any other type.
    pub fn of(array: &'a ArrayRef) -> Option<Lines<'a>> {
        match array.as_string_opt::<i32>() {
            Some(a) => Some(Lines::Utf8(a)),
            None => array.as_string_view_opt().map(Lines::View),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Lines::Utf8(a) => a.len(),
            Lines::View(a) => a.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` has a line (lines are never null in the schema).
    pub fn is_valid(&self, i: usize) -> bool {
        match self {
            Lines::Utf8(a) => a.is_valid(i),
            Lines::View(a) => a.is_valid(i),
        }
    }

    /// The line of row `i`.
    #[inline]
    pub fn value(&self, i: usize) -> &'a str {
        match self {
            Lines::Utf8(a) => a.value(i),
            Lines::View(a) => a.value(i),
        }
    }

    /// Bytes of all lines.
    pub fn value_bytes(&self) -> u64 {
        match self {
            Lines::Utf8(a) => {
                let offsets = a.value_offsets();
                match (offsets.first(), offsets.last()) {
                    (Some(first), Some(last)) => (last - first) as u64,
                    _ => 0,
                }
            }
            // The low 32 bits of a view are its string's length.
            Lines::View(a) => a.views().iter().map(|&v| u64::from(v as u32)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn both_encodings_read_the_same() {
        let text = ["short", "", "a line longer than twelve bytes"];
        let utf8: ArrayRef = Arc::new(StringArray::from(text.to_vec()));
        let view: ArrayRef = Arc::new(StringViewArray::from(text.to_vec()));
        for array in [&utf8, &view] {
            let lines = Lines::of(array).expect("a string column");
            assert_eq!(lines.len(), 3);
            assert_eq!((0..3).map(|i| lines.value(i)).collect::<Vec<_>>(), text);
            assert!(lines.is_valid(2));
            assert_eq!(lines.value_bytes(), (5 + 31) as u64);
        }
        let sliced = view.slice(2, 1);
        assert_eq!(Lines::of(&sliced).map(|l| l.value_bytes()), Some(31));
        let sliced = utf8.slice(2, 1);
        assert_eq!(Lines::of(&sliced).map(|l| l.value_bytes()), Some(31));
        let ints: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![1]));
        assert!(Lines::of(&ints).is_none());
    }
}
