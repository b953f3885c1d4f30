//! The store-and-forward buffer of a gateway: messages waiting for a link, oldest first, bounded.
//!
//! Real loggers have a fixed flash ring: when it is full the oldest record is overwritten, because the newest readings
//! matter most during a storm. Every overwrite is counted so a run can say exactly what was lost.

use std::collections::VecDeque;

/// Bounded FIFO that drops its oldest entry when full.
#[derive(Debug)]
pub struct Outbox<T> {
    /// Waiting messages, oldest at the front.
    queue: VecDeque<T>,
    /// Most messages held at once; pushing past it drops from the front.
    capacity: usize,
    /// Messages overwritten because the buffer was full.
    dropped: u64,
    /// Highest fill seen, for the summary (how close the run came to losing data).
    peak: usize,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an outbox needs room for at least one message");
        Outbox { queue: VecDeque::new(), capacity, dropped: 0, peak: 0 }
    }

    /// Add the newest message; returns the one dropped to make room, if any.
    pub fn push(&mut self, item: T) -> Option<T> {
        self.queue.push_back(item);
        self.trim()
    }

    /// Put messages that were sent but never acknowledged back at the front, in their original order: they are older
    /// than anything still waiting, so they go out first again (and are the first dropped if that overflows).
    /// Returns the messages dropped.
    pub fn requeue_front(&mut self, items: Vec<T>) -> Vec<T> {
        for item in items.into_iter().rev() {
            self.queue.push_front(item);
        }
        let mut dropped = Vec::new();
        while let Some(d) = self.trim() {
            dropped.push(d);
        }
        dropped
    }

    fn trim(&mut self) -> Option<T> {
        self.peak = self.peak.max(self.queue.len().min(self.capacity));
        if self.queue.len() > self.capacity {
            self.dropped += 1;
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// Oldest waiting message, to send next.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Empty the buffer (a device that dies loses its RAM); returns what was in it.
    pub fn drain(&mut self) -> Vec<T> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_when_full_and_counts() {
        let mut o = Outbox::new(3);
        for i in 0..5 {
            o.push(i);
        }
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.drain(), vec![2, 3, 4]);
        assert_eq!(o.peak(), 3);
    }

    #[test]
    fn unacknowledged_go_back_first_in_order() {
        let mut o = Outbox::new(10);
        o.push(5);
        o.push(6);
        assert!(o.requeue_front(vec![3, 4]).is_empty());
        assert_eq!(o.drain(), vec![3, 4, 5, 6]);
    }

    #[test]
    fn requeue_overflow_drops_the_oldest() {
        let mut o = Outbox::new(3);
        o.push(5);
        o.push(6);
        assert_eq!(o.requeue_front(vec![2, 3, 4]), vec![2, 3]);
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.drain(), vec![4, 5, 6]);
    }
}
