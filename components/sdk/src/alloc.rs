//! The component's memory allocator: small blocks by size class, everything else by the
//! standard library's.
//!
//! A request's life in a component is dozens of small allocations: the host lowers each string
//! of the request into the guest through its allocator, and the handler builds a few strings,
//! a JSON body and its headers. The standard allocator (dlmalloc) spends a few hundred
//! instructions on each allocation and free; here a block of up to [`LARGEST`] bytes comes from
//! a free list of its size class (powers of two from 16 bytes), or is cut from the current
//! chunk, in a handful. Freed blocks stay in their class for the instance's next allocation of
//! that size (an instance kept for reuse serves its next request from them); larger or more
//! strictly aligned blocks go to the standard allocator.
//!
//! Built into every component by default (the `allocator` feature); a component that brings its
//! own `#[global_allocator]` turns the feature off. Components are single-threaded: the
//! allocator has no locks.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class, which is also every block's alignment.
const SMALLEST: usize = 16;
/// How many classes: 16 bytes to [`LARGEST`].
const CLASSES: usize = 8;
/// The largest class; anything larger goes to the fallback allocator.
const LARGEST: usize = SMALLEST << (CLASSES - 1);
/// Blocks are cut from chunks of this size, taken from the fallback allocator.
const CHUNK: usize = 32 * 1024;

/// A size-class allocator in front of `fallback` (the standard library's, in a component).
pub struct Classes<A> {
    fallback: A,
    lists: UnsafeCell<Lists>,
}

struct Lists {
    /// Per class, the first free block; each free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

// A component runs on one thread (wasm32 without shared memory): nothing is ever shared.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Classes<A> {}

impl<A> Classes<A> {
    pub const fn new(fallback: A) -> Self {
        Self {
            fallback,
            lists: UnsafeCell::new(Lists {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The class of blocks of `layout`, if it is small enough and needs no stricter alignment than
/// every block has.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST || layout.align() > SMALLEST {
        return None;
    }
    let size = layout.size().max(SMALLEST).next_power_of_two();
    Some((size.trailing_zeros() - SMALLEST.trailing_zeros()) as usize)
}

const fn class_size(class: usize) -> usize {
    SMALLEST << class
}

impl<A: GlobalAlloc> Classes<A> {
    /// A block of `class`: the first free one, else cut from the current chunk (a new chunk
    /// when it has too little left). Null when the fallback has no memory left.
    ///
    /// # Safety
    /// Not while another call on this allocator runs (one thread).
    unsafe fn take(&self, class: usize) -> *mut u8 {
        // SAFETY: one thread, and no call of this allocator is re-entered.
        let lists = unsafe { &mut *self.lists.get() };
        let head = lists.free[class];
        if !head.is_null() {
            // SAFETY: a free block holds the address of the next one in its first bytes.
            lists.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(class);
        if (lists.end as usize) - (lists.next as usize) < size {
            // SAFETY: CHUNK is a non-zero multiple of SMALLEST, a power of two.
            let chunk = unsafe {
                self.fallback
                    .alloc(Layout::from_size_align_unchecked(CHUNK, SMALLEST))
            };
            if chunk.is_null() {
                return ptr::null_mut();
            }
            // What is left of the old chunk is a multiple of the smallest class: it becomes
            // free blocks, largest first, rather than being lost.
            let mut rest = lists.next;
            while (lists.end as usize) - (rest as usize) >= SMALLEST {
                let left = (lists.end as usize) - (rest as usize);
                let fits = (0..CLASSES)
                    .rev()
                    .find(|&c| class_size(c) <= left)
                    .unwrap_or(0);
                // SAFETY: the block lies in the old chunk, unused.
                unsafe { push(&mut lists.free[fits], rest) };
                rest = rest.wrapping_add(class_size(fits));
            }
            lists.next = chunk;
            lists.end = chunk.wrapping_add(CHUNK);
        }
        let block = lists.next;
        lists.next = block.wrapping_add(size);
        block
    }
}

/// Puts `block` at the head of the free list `head`.
///
/// # Safety
/// `block` is unused, at least [`SMALLEST`] bytes and aligned to them.
unsafe fn push(head: &mut *mut u8, block: *mut u8) {
    // SAFETY: the caller gives a block large and aligned enough for an address.
    unsafe { block.cast::<*mut u8>().write(*head) };
    *head = block;
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Classes<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: one thread (see `take`).
            Some(class) => unsafe { self.take(class) },
            // SAFETY: forwarded as given.
            None => unsafe { self.fallback.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(layout) {
            Some(class) => {
                // SAFETY: one thread; the block came from this class (the same layout) and
                // is no longer used.
                let lists = unsafe { &mut *self.lists.get() };
                unsafe { push(&mut lists.free[class], block) };
            }
            // SAFETY: the block came from the fallback with this layout.
            None => unsafe { self.fallback.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to `align`, fits an isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // The block is large enough already: it stays where it is, and is freed into the
            // new size's class later (a larger block in a smaller class is only unused space).
            (Some(old), Some(wanted)) if wanted <= old => block,
            // SAFETY: forwarded as given.
            (None, None) => unsafe { self.fallback.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: `new` is a valid layout (above); the old block is valid for its size.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashSet;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap_or(Layout::new::<u8>())
    }

    /// Allocates, fills each block with its own byte, and checks that every block kept its
    /// contents (no two overlap) and is aligned.
    fn fill_and_check(heap: &Classes<System>, sizes: &[usize]) -> Vec<(*mut u8, Layout)> {
        let blocks: Vec<_> = sizes
            .iter()
            .map(|&size| {
                let layout = layout(size, 8);
                let block = unsafe { heap.alloc(layout) };
                assert!(!block.is_null());
                assert_eq!(block as usize % 8, 0);
                (block, layout)
            })
            .collect();
        for (i, (block, layout)) in blocks.iter().enumerate() {
            unsafe { ptr::write_bytes(*block, i as u8, layout.size()) };
        }
        for (i, (block, layout)) in blocks.iter().enumerate() {
            let bytes = unsafe { std::slice::from_raw_parts(*block, layout.size()) };
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "block {i} was overwritten"
            );
        }
        blocks
    }

    #[test]
    fn blocks_of_every_size_never_overlap() {
        let heap = Classes::new(System);
        // Small and large, across many chunks.
        let sizes: Vec<usize> = (1..3000).map(|i| (i * 37) % 5000 + 1).collect();
        let blocks = fill_and_check(&heap, &sizes);
        for (block, layout) in blocks {
            unsafe { heap.dealloc(block, layout) };
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_allocation_of_its_class() {
        let heap = Classes::new(System);
        let sizes = [3, 17, 100, 700, 2048, 40];
        // The same work over and over (a kept instance's requests) reuses the same blocks.
        let first: HashSet<usize> = {
            let blocks = fill_and_check(&heap, &sizes);
            let addresses = blocks.iter().map(|(b, _)| *b as usize).collect();
            for (block, layout) in blocks {
                unsafe { heap.dealloc(block, layout) };
            }
            addresses
        };
        for _ in 0..100 {
            let blocks = fill_and_check(&heap, &sizes);
            let addresses: HashSet<usize> = blocks.iter().map(|(b, _)| *b as usize).collect();
            assert_eq!(addresses, first);
            for (block, layout) in blocks {
                unsafe { heap.dealloc(block, layout) };
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_to_the_fallback() {
        let heap = Classes::new(System);
        let mut layout = layout(1, 1);
        let mut block = unsafe { heap.alloc(layout) };
        unsafe { block.write(0) };
        // Grow a byte at a time past the largest class, as a `Vec<u8>` pushing would.
        for size in 2..=3 * LARGEST {
            block = unsafe { heap.realloc(block, layout, size) };
            assert!(!block.is_null());
            layout = self::layout(size, 1);
            unsafe { block.add(size - 1).write((size - 1) as u8) };
        }
        // And shrink it back into a class.
        block = unsafe { heap.realloc(block, layout, 10) };
        layout = self::layout(10, 1);
        let bytes = unsafe { std::slice::from_raw_parts(block, 10) };
        assert_eq!(bytes, (0..10).collect::<Vec<u8>>().as_slice());
        unsafe { heap.dealloc(block, layout) };
    }

    #[test]
    fn growing_within_a_class_keeps_the_block() {
        let heap = Classes::new(System);
        let block = unsafe { heap.alloc(layout(20, 1)) };
        assert_eq!(unsafe { heap.realloc(block, layout(20, 1), 32) }, block);
        assert_ne!(unsafe { heap.realloc(block, layout(32, 1), 33) }, block);
    }

    #[test]
    fn strict_alignment_is_honoured() {
        let heap = Classes::new(System);
        for align in [32, 64, 4096] {
            let layout = layout(24, align);
            let block = unsafe { heap.alloc(layout) };
            assert_eq!(block as usize % align, 0);
            unsafe { heap.dealloc(block, layout) };
        }
    }
}
