package images

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostBinary returns the files that run the host program src as dst inside
// an image: src's content (symlinks followed) at dst, plus every shared
// library and the dynamic loader that ldd reports, at the very paths ldd
// reports. Symlinks met on those paths, directories included (/lib ->
// usr/lib on a merged-/usr system), are recreated as symlinks and the real
// files copied, so the loader finds everything where it looks on the host.
// A static program gives just dst.
func HostBinary(src, dst string) ([]File, error) {
	files := []File{{Path: dst, Source: src}}
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("host binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("host binary %s is no executable file", src)
	}
	libs, err := sharedLibs(src)
	if err != nil {
		return nil, err
	}
	for _, lib := range libs {
		chain, err := hostPath(lib)
		if err != nil {
			return nil, fmt.Errorf("host binary %s: library: %w", src, err)
		}
		files = append(files, chain...)
	}
	return files, nil
}

// sharedLibs runs ldd on bin and returns the paths it resolved.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		// A static program: glibc's ldd exits 1 saying so.
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	libs, err := parseLdd(string(out))
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	return libs, nil
}

// parseLdd reads glibc ldd output:
//
//	linux-vdso.so.1 (0x...)                      kernel-provided, skipped
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)          the loader
//	libfoo.so.1 => not found                     an error
//	statically linked                            nothing
func parseLdd(out string) ([]string, error) {
	var libs, missing []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		if name, target, ok := strings.Cut(line, "=>"); ok {
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "not found") {
				missing = append(missing, strings.TrimSpace(name))
				continue
			}
			if f := strings.Fields(target); len(f) > 0 && strings.HasPrefix(f[0], "/") {
				libs = append(libs, f[0])
			}
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			libs = append(libs, f[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("libraries not found: %s", strings.Join(missing, ", "))
	}
	return libs, nil
}

// hostPath returns the entries that make the host path p resolve in an image
// as it does on the host: each symlink on the way (in any component) as a
// symlink, and the final regular file as a copy.
func hostPath(p string) ([]File, error) {
	var files []File
	for hops := 0; hops < 40; hops++ {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("path %q is not absolute", p)
		}
		parts := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
		cur, followed := "/", false
		for i, part := range parts {
			next := filepath.Join(cur, part)
			fi, err := os.Lstat(next)
			if err != nil {
				return nil, fmt.Errorf("resolve %s: %w", p, err)
			}
			if fi.Mode()&fs.ModeSymlink == 0 {
				cur = next
				continue
			}
			target, err := os.Readlink(next)
			if err != nil {
				return nil, fmt.Errorf("resolve %s: %w", p, err)
			}
			files = append(files, File{Path: next, Link: target})
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			p = filepath.Join(append([]string{target}, parts[i+1:]...)...)
			followed = true
			break
		}
		if followed {
			continue
		}
		fi, err := os.Stat(cur)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", cur)
		}
		return append(files, File{Path: cur, Source: cur}), nil
	}
	return nil, errors.New("resolve " + p + ": too many levels of symbolic links")
}

// busyboxApplets lists the applets the busybox binary at bin provides.
func busyboxApplets(bin string) ([]string, error) {
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	var applets []string
	for _, name := range strings.Fields(string(out)) {
		if name != "busybox" && !strings.Contains(name, "/") {
			applets = append(applets, name)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list: no applets", bin)
	}
	return applets, nil
}

// Busybox returns /bin/busybox (from the host binary bin, with its libraries
// if it is not static) and a /bin/NAME symlink for each of its applets, but
// none whose name is in skip.
func Busybox(bin string, skip ...string) ([]File, error) {
	files, err := HostBinary(bin, "/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	applets, err := busyboxApplets(bin)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	omit := map[string]bool{}
	for _, s := range skip {
		omit[s] = true
	}
	for _, a := range applets {
		if !omit[a] {
			files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
		}
	}
	return files, nil
}
