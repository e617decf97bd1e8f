//! Entry points for benchmarks only (feature `gpu-bench`): make rows resident without uploading
//! them, and time the gather kernel alone, hashed or by slot.

use std::sync::atomic::Ordering;

use cudarc::driver::PushKernelArg;

use super::{GpuError, GpuTier, grid};

impl GpuTier {
    /// Plain gather of arena rows by slot into device memory at `dst` (the index_select
    /// baseline); `slots` are taken modulo the capacity.
    pub fn gather_slots_to_device(&self, slots: &[u32], dst: u64) -> Result<(), GpuError> {
        if !self.row_bytes.is_multiple_of(16) {
            return Err(GpuError::Invalid(
                "gather by slot needs rows of a multiple of 16 bytes".into(),
            ));
        }
        let mut s = self.scratch.lock();
        let s = &mut *s;
        self.bind()?;
        let stream = s.stream.clone();
        let cu = stream.cu_stream();
        let words = (self.row_bytes / 16) as u32;
        for (i, chunk) in slots.chunks(self.max_batch).enumerate() {
            let fixed: Vec<u32> = chunk.iter().map(|&x| x % self.capacity as u32).collect();
            let pos_ptr = s.flags.ptr();
            // SAFETY: fits the scratch and stays borrowed until the synchronize below.
            unsafe { cudarc::driver::result::memcpy_htod_async(pos_ptr, &fixed, cu) }
                .map_err(|e| GpuError::cuda("copy slots to the device", e))?;
            let (n, arena) = (chunk.len() as u32, self.mem.arena.ptr());
            let out = dst + (i * self.max_batch * self.row_bytes) as u64;
            let mut b = stream.launch_builder(&self.kernels.gather_slots_16);
            b.arg(&pos_ptr).arg(&n).arg(&arena).arg(&words).arg(&out);
            // SAFETY: arguments match the kernel; slots are within the arena.
            unsafe { b.launch(grid(u64::from(n) * u64::from(words))) }
                .map_err(|e| GpuError::cuda("launch the slot gather kernel", e))?;
            stream
                .synchronize()
                .map_err(|e| GpuError::cuda("slot gather", e))?;
        }
        Ok(())
    }

    /// For benchmarks: makes rows `0..rows` resident in slots `0..rows` (their bytes are
    /// whatever the arena holds), so a large tier can be timed without uploading its rows.
    pub fn load_identity(&self, rows: usize) -> Result<(), GpuError> {
        let rows = rows.min(self.capacity);
        let mut r = self.residency.lock();
        self.bind()?;
        let ids: Vec<u64> = (0..rows as u64).collect();
        let slots: Vec<u32> = (0..rows as u32).collect();
        self.write_tags(&r, &slots, &ids)?;
        let previous: Vec<u64> = self.resident.read().keys().copied().collect();
        self.publish_edits(&mut r, |index, changed| {
            for id in previous {
                index.remove(id, changed);
            }
            for i in 0..rows {
                index.insert(i as u64, i as u32, changed);
            }
        })?;
        *self.resident.write() = (0..rows as u64).map(|i| (i, i as u32)).collect();
        r.free = (rows as u32..self.capacity as u32).rev().collect();
        r.generation += 1;
        Ok(())
    }

    /// For benchmarks: times `iterations` launches of the gather kernel alone over `ids`
    /// already on the device (hashed: through the index; else plain gather by slot = id),
    /// into the scratch rows. Returns the mean seconds per launch.
    pub fn time_kernel(
        &self,
        ids: &[u64],
        iterations: usize,
        hashed: bool,
    ) -> Result<f64, GpuError> {
        let n = ids.len().min(self.max_batch);
        let mut s = self.scratch.lock();
        let s = &mut *s;
        self.bind()?;
        let stream = s.stream.clone();
        let cu = stream.cu_stream();
        let (ids_ptr, out, flags) = (s.ids.ptr(), s.rows.ptr(), s.flags.ptr());
        let slots: Vec<u32> = ids[..n]
            .iter()
            .map(|&i| (i % self.capacity as u64) as u32)
            .collect();
        // SAFETY: both fit the scratch buffers and live until the synchronize below.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(ids_ptr, &ids[..n], cu)
                .map_err(|e| GpuError::cuda("copy ids", e))?;
        }
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("copy ids", e))?;
        let a = self.active.load(Ordering::Acquire);
        let (keys, islots) = self.index_buffer(a);
        let arena = self.mem.arena.ptr();
        let (n32, mask) = (n as u32, self.buckets as u64 - 1);
        let words = (self.row_bytes / 16) as u32;
        // The plain gather reads its slots from the flags buffer (u32, n of them); the hashed
        // gather writes its hit flags there.
        if !hashed {
            // SAFETY: as above.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(flags, &slots, cu)
                    .map_err(|e| GpuError::cuda("copy slots", e))?;
            }
        }
        let hit_flags = flags;
        let launch = || -> Result<(), GpuError> {
            if hashed {
                let (f, w) = self.gather_fn();
                let mut b = stream.launch_builder(f);
                b.arg(&ids_ptr)
                    .arg(&n32)
                    .arg(&keys)
                    .arg(&islots)
                    .arg(&mask)
                    .arg(&arena)
                    .arg(&w)
                    .arg(&out)
                    .arg(&hit_flags);
                // SAFETY: arguments match the kernel; buffers are sized for n rows.
                unsafe { b.launch(grid(n as u64 * 32)) }
                    .map_err(|e| GpuError::cuda("launch", e))?;
            } else {
                let mut b = stream.launch_builder(&self.kernels.gather_slots_16);
                b.arg(&flags).arg(&n32).arg(&arena).arg(&words).arg(&out);
                // SAFETY: arguments match the kernel; slots are within the arena.
                unsafe { b.launch(grid(n as u64 * u64::from(words))) }
                    .map_err(|e| GpuError::cuda("launch", e))?;
            }
            Ok(())
        };
        launch()?;
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("warm up", e))?;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            launch()?;
        }
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("time kernel", e))?;
        Ok(start.elapsed().as_secs_f64() / iterations.max(1) as f64)
    }
}
