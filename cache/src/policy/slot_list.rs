//! An intrusive doubly linked list over slot numbers (two `u32` links per slot), the ordering
//! that LRU and SIEVE keep: O(1) push at the head, unlink anywhere, walk from the tail.

/// Marks the end of the list.
pub(crate) const NIL: u32 = u32::MAX;

/// A list of distinct slots in `0..capacity`, most recent at the head.
#[derive(Debug)]
pub(crate) struct SlotList {
    prev: Box<[u32]>,
    next: Box<[u32]>,
    head: u32,
    tail: u32,
}

impl SlotList {
    /// An empty list over slots `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            prev: vec![NIL; capacity].into_boxed_slice(),
            next: vec![NIL; capacity].into_boxed_slice(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.prev) + std::mem::size_of_val(&*self.next)
    }

    /// The least recently pushed slot, or [`NIL`].
    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }

    /// The neighbour of `slot` towards the head (pushed after it), or [`NIL`].
    pub(crate) fn toward_head(&self, slot: u32) -> u32 {
        self.prev[slot as usize]
    }

    /// Puts `slot` (not in the list) at the head.
    pub(crate) fn push_head(&mut self, slot: u32) {
        self.prev[slot as usize] = NIL;
        self.next[slot as usize] = self.head;
        if self.head == NIL {
            self.tail = slot;
        } else {
            self.prev[self.head as usize] = slot;
        }
        self.head = slot;
    }

    /// Takes `slot` (in the list) out of it.
    pub(crate) fn unlink(&mut self, slot: u32) {
        let (p, n) = (self.prev[slot as usize], self.next[slot as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
    }

    /// Moves `slot` (in the list) to the head.
    pub(crate) fn move_to_head(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.push_head(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_tail(list: &SlotList) -> Vec<u32> {
        let mut out = Vec::new();
        let mut s = list.tail();
        while s != NIL {
            out.push(s);
            s = list.toward_head(s);
        }
        out
    }

    #[test]
    fn keeps_order_through_moves_and_unlinks() {
        let mut list = SlotList::new(4);
        for s in 0..4 {
            list.push_head(s);
        }
        assert_eq!(from_tail(&list), [0, 1, 2, 3]);
        list.move_to_head(1);
        list.unlink(2);
        list.move_to_head(0);
        assert_eq!(from_tail(&list), [3, 1, 0]);
        list.unlink(0);
        list.unlink(3);
        list.unlink(1);
        assert_eq!(list.tail(), NIL);
    }
}
