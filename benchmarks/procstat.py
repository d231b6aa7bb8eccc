"""CPU accounting from /proc: per-core busy % (/proc/stat) and per-process /
per-thread CPU seconds (utime+stime from /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat)."""
import os

TICK = os.sysconf("SC_CLK_TCK")


def cores():
    """{core index: (busy ticks, steal ticks, total ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, vals[:8])
                busy = user + nice + system + irq + softirq
                out[int(name[3:])] = (busy, steal, busy + idle + iowait + steal)
    return out


def core_busy(before, after):
    """{core: {"busy": %, "steal": %}} over the interval between two cores() snapshots."""
    res = {}
    for c in after:
        db, ds, dt = (a - b for a, b in zip(after[c], before[c]))
        dt = dt or 1
        res[c] = {"busy": 100.0 * db / dt, "steal": 100.0 * ds / dt}
    return res


def _stat_times(path):
    """(utime + stime, stime) in seconds."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK


def _stat_seconds(path):
    return _stat_times(path)[0]


def process_cpu(pid):
    """{"process": s, "system": s, "main": s, "others": s, "threads": {tid: s}};
    the main thread (tid == pid) is the event loop thread; "system" is the
    process's time in the kernel (stime, part of "process")."""
    total, system = _stat_times(f"/proc/{pid}/stat")
    snap = {"process": total, "system": system, "threads": {}}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            snap["threads"][int(tid)] = _stat_seconds(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            pass
    snap["main"] = snap["threads"].get(pid, 0.0)
    snap["others"] = sum(s for t, s in snap["threads"].items() if t != pid)
    return snap


def cpu_delta(pid, before, after):
    """CPU seconds used between two process_cpu() snapshots: whole process, the
    main (loop) thread, and all other threads (npaio pollers), and the whole
    process's kernel part; threads that appeared in between count from zero."""
    others = sum(s - before["threads"].get(t, 0.0)
                 for t, s in after["threads"].items() if t != pid)
    return {"process": after["process"] - before["process"],
            "system": after["system"] - before["system"],
            "main": after["main"] - before["main"],
            "others": others}
