//! The process's own figures, read from `/proc` at scrape time (Linux only; elsewhere the
//! `process_*` metrics are absent). The names and meanings follow the Prometheus client
//! libraries, so the usual dashboards work.

/// One reading of the process.
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub start_time_seconds: f64,
}

#[cfg(target_os = "linux")]
pub fn read() -> Option<Process> {
    // SAFETY: sysconf only reads configuration values.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    if ticks <= 0.0 || page <= 0.0 {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: the fields start after the last ')'.
    // Counting from its field 3 (state) at index 0: utime is field 14, stime 15, starttime 22,
    // vsize 23, rss 24 (proc(5)).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        open_fds,
        start_time_seconds: boot_time + field(22)? / ticks,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<Process> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::expect_used)]

    #[test]
    fn the_process_reads_itself() {
        let process = super::read().expect("/proc is readable");
        assert!(process.resident_bytes > 0.0);
        assert!(process.open_fds >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(process.start_time_seconds <= now + 1.0);
        assert!(process.start_time_seconds > now - 86_400.0);
    }
}
