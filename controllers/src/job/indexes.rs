//! Sets of completion indexes as Kubernetes writes them in a Job's `completedIndexes` and
//! `failedIndexes` and in a success policy's `succeededIndexes`: ordered intervals, printed
//! `1,3-5,7` (three or more consecutive indexes as a range, two as `3,4`).

use std::fmt;

/// An ordered set of indexes, kept as disjoint, non-adjacent intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Indexes(Vec<(i32, i32)>);

impl Indexes {
    /// The indexes `s` lists, those at or past `completions` left out. Fragments that are not
    /// numbers are skipped, as the Job controller skips a corrupted interval.
    pub fn parse(s: &str, completions: i32) -> Indexes {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let mut ends = part.splitn(2, '-');
            let Some(Ok(first)) = ends.next().map(str::parse::<i32>) else {
                continue;
            };
            let last = match ends.next() {
                Some(l) => match l.parse::<i32>() {
                    Ok(l) => l,
                    Err(_) => continue,
                },
                None => first,
            };
            if first < 0 || first >= completions || last < first {
                continue;
            }
            out.push((first, last.min(completions - 1)));
        }
        Indexes::normalized(out)
    }

    /// The set of `indexes`.
    pub fn of(indexes: impl IntoIterator<Item = i32>) -> Indexes {
        Indexes::normalized(indexes.into_iter().map(|i| (i, i)).collect())
    }

    fn normalized(mut v: Vec<(i32, i32)>) -> Indexes {
        v.sort_unstable();
        let mut out: Vec<(i32, i32)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Indexes(out)
    }

    /// This set with `other`'s indexes added.
    pub fn union(&self, other: &Indexes) -> Indexes {
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        Indexes::normalized(v)
    }

    /// This set with `indexes` added.
    pub fn with(&self, indexes: impl IntoIterator<Item = i32>) -> Indexes {
        self.union(&Indexes::of(indexes))
    }

    /// How many indexes the set holds.
    pub fn total(&self) -> i32 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// Whether `i` is in the set.
    pub fn has(&self, i: i32) -> bool {
        let at = self.0.partition_point(|&(_, last)| last < i);
        self.0.get(at).is_some_and(|&(first, _)| first <= i)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many indexes the two sets share.
    pub fn overlap(&self, other: &Indexes) -> i32 {
        let (mut i, mut j, mut n) = (0, 0, 0);
        while let (Some(&(a1, b1)), Some(&(a2, b2))) = (self.0.get(i), other.0.get(j)) {
            n += (b1.min(b2) - a1.max(a2) + 1).max(0);
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        n
    }

    /// The first `count` indexes below `completions` that are not in the set.
    pub fn first_missing(&self, count: usize, completions: i32) -> Vec<i32> {
        let mut out = Vec::with_capacity(count);
        let mut candidate = 0;
        for &(first, last) in &self.0 {
            while candidate < completions && out.len() < count && candidate < first {
                out.push(candidate);
                candidate += 1;
            }
            candidate = candidate.max(last.saturating_add(1));
        }
        while candidate < completions && out.len() < count {
            out.push(candidate);
            candidate += 1;
        }
        out
    }
}

impl fmt::Display for Indexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, &(first, last)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match last - first {
                0 => write!(f, "{first}")?,
                1 => write!(f, "{first},{last}")?,
                _ => write!(f, "{first}-{last}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_as_kubernetes_prints_them() {
        assert_eq!(Indexes::of([0, 1, 2, 4, 6, 7]).to_string(), "0-2,4,6,7");
        assert_eq!(Indexes::of([1, 3, 4, 5, 7]).to_string(), "1,3-5,7");
        assert_eq!(Indexes::default().to_string(), "");
    }

    #[test]
    fn parsed_within_completions() {
        let s = Indexes::parse("0-2,4,6,7", 10);
        assert_eq!(s, Indexes::of([0, 1, 2, 4, 6, 7]));
        assert_eq!(s.total(), 6);
        assert!(s.has(4) && !s.has(5) && s.has(7) && !s.has(8));
        assert_eq!(Indexes::parse("1-9,x,12", 5).to_string(), "1-4");
        assert!(Indexes::parse("", 3).is_empty());
    }

    #[test]
    fn unions_overlaps_and_gaps() {
        let a = Indexes::of([0, 1, 5]);
        assert_eq!(a.with([2, 3]).to_string(), "0-3,5");
        assert_eq!(a.overlap(&Indexes::parse("1-5", 9)), 2);
        assert_eq!(a.first_missing(3, 9), vec![2, 3, 4]);
        assert_eq!(a.first_missing(5, 7), vec![2, 3, 4, 6]);
    }
}
