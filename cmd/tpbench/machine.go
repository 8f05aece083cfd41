package main

import (
	"bufio"
	"os"
	"runtime"
	"strings"
	"time"
)

// machine describes where a run happened, so that a pasted table names its
// machine. Fields that cannot be read on this system are empty.
type machine struct {
	CPUModel   string `json:"cpu_model"`  // /proc/cpuinfo, or sysctl on darwin and freebsd
	CPUs       int    `json:"cpus"`       // logical CPUs usable by the process
	GOMAXPROCS int    `json:"gomaxprocs"` //
	Kernel     string `json:"kernel"`     // uname: system, release, machine
	GoVersion  string `json:"go_version"` // with GOOS/GOARCH
	LoadAvg    string `json:"loadavg"`    // 1, 5 and 15 minutes, before the run
	Date       string `json:"date"`       // when the run started, UTC
}

// readMachine describes this machine now.
func readMachine() machine {
	m := machine{
		CPUModel:   cpuModel(readText("/proc/cpuinfo")),
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Kernel:     kernel(),
		GoVersion:  runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvg:    loadAvg(readText("/proc/loadavg")),
		Date:       time.Now().UTC().Format("2006-01-02 15:04 MST"),
	}
	if m.CPUModel == "" {
		m.CPUModel = sysctlCPUModel()
	}
	return m
}

// readText returns the file's contents, or "" if it cannot be read (a
// system without /proc).
func readText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// cpuModel returns the first CPU's model from the text of /proc/cpuinfo:
// "model name" on x86, else the first of the other keys that ARM, POWER and
// RISC-V kernels use; "" if there is none.
func cpuModel(cpuinfo string) string {
	keys := []string{"model name", "Hardware", "cpu model", "cpu", "uarch", "Processor"}
	found := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, seen := found[k]; ok && v != "" && !seen {
			found[k] = v
		}
	}
	for _, k := range keys {
		if v := found[k]; v != "" {
			return v
		}
	}
	return ""
}

// loadAvg returns the three load averages from the text of /proc/loadavg,
// "" if it has fewer fields.
func loadAvg(text string) string {
	f := strings.Fields(text)
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// orUnknown returns s, or "unknown" for "".
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
