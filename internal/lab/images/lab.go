package images

import (
	"fmt"
	"io/fs"
	"os/exec"
)

// The lab's image names. PauseImage, AgnhostImage and BusyBoxImage are the
// exact references the upstream e2e framework v1.34.4 uses
// (test/utils/image/manifest.go); PauseImage is also kubeadm v1.34's default,
// and containerd's sandbox_image must name it. ToolsImage is the lab's own:
// not ":latest", whose default pull policy (Always) fails without a registry.
const (
	PauseImage   = "registry.k8s.io/pause:3.10.1"
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.56"
	BusyBoxImage = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
	ToolsImage   = "strait.local/lab/tools:v1"
)

// DefaultPath is the PATH of every lab image.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options say where the programs the images are made of come from.
type Options struct {
	// PauseBin is a static pause program (BuildPause); empty leaves the
	// pause image out.
	PauseBin string
	// AgnhostBin is a static agnhost (k8s.io/kubernetes/test/images/agnhost);
	// empty leaves the agnhost image out.
	AgnhostBin string
	// WgetBin is a static wget (BuildWget); when set it is /bin/wget of the
	// tools and agnhost images instead of busybox's applet, which crashes
	// (SIGSEGV) whenever -T is given (Debian busybox 1.35).
	WgetBin string
	// BusyboxBin, CurlBin, NcBin and ShBin are host programs, found on PATH
	// when empty: busybox (Debian busybox-static), curl, nc.openbsd (Debian
	// netcat-openbsd: busybox's nc has no -u/-v, which e2e dials use) and
	// dash, the /bin/sh of the tools and agnhost images (busybox-static's sh
	// runs its own applets before PATH, so `nc` would be busybox's).
	BusyboxBin, CurlBin, NcBin, ShBin string
	// Gzip compresses the layers.
	Gzip bool
}

func (o Options) withDefaults() (Options, error) {
	for _, p := range []struct {
		field *string
		name  string
	}{{&o.BusyboxBin, "busybox"}, {&o.CurlBin, "curl"}, {&o.NcBin, "nc.openbsd"}, {&o.ShBin, "dash"}} {
		if *p.field != "" {
			continue
		}
		found, err := exec.LookPath(p.name)
		if err != nil {
			return o, fmt.Errorf("lab images: %s (install Debian busybox-static, curl, netcat-openbsd, dash): %w", p.name, err)
		}
		*p.field = found
	}
	return o, nil
}

// Lab returns the lab's images: pause (when PauseBin is set), tools,
// busybox, and agnhost (when AgnhostBin is set).
func Lab(o Options) ([]Image, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	var imgs []Image
	if o.PauseBin != "" {
		imgs = append(imgs, Image{
			Name:       PauseImage,
			Files:      []File{{Path: "/pause", Source: o.PauseBin, Mode: 0o755}},
			Entrypoint: []string{"/pause"},
			Env:        []string{DefaultPath},
			Gzip:       o.Gzip,
		})
	}
	user, err := Userland(o)
	if err != nil {
		return nil, err
	}
	imgs = append(imgs, Image{
		Name:  ToolsImage,
		Files: concat(user, etcFiles("")),
		// No entrypoint: `kubectl run t --image=ToolsImage -- sleep 3600`
		// replaces Cmd and runs sleep.
		Cmd:  []string{"sleep", "infinity"},
		Env:  []string{DefaultPath},
		Gzip: o.Gzip,
	})
	bb, err := Busybox(o.BusyboxBin)
	if err != nil {
		return nil, err
	}
	imgs = append(imgs, Image{
		Name:  BusyBoxImage,
		Files: concat(bb, etcFiles("")),
		Cmd:   []string{"sh"},
		Env:   []string{DefaultPath},
		Gzip:  o.Gzip,
	})
	if o.AgnhostBin != "" {
		files := concat(user, etcFiles(agnhostUsers), []File{
			{Path: "/agnhost", Source: o.AgnhostBin, Mode: 0o755},
			{Path: "/agnhost-2", Link: "agnhost"},
			{Path: "/uploads", Mode: fs.ModeDir | 0o755},
		})
		imgs = append(imgs, Image{
			Name:       AgnhostImage,
			Files:      files,
			Entrypoint: []string{"/agnhost"},
			Cmd:        []string{"pause"},
			Env:        []string{DefaultPath},
			Gzip:       o.Gzip,
		})
	}
	return imgs, nil
}

// Userland is what the e2e tests exec in their pods: dash as /bin/sh,
// busybox's other applets in /bin (grep, sed, awk, wget, nslookup, ip, ps,
// sleep, seq, ...) with o.WgetBin as /bin/wget when set, curl and OpenBSD nc in /usr/bin, each with its shared
// libraries and the loader, /usr/bin/env, /tmp and /root. Empty program
// paths in o are looked up on PATH.
func Userland(o Options) ([]File, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	skip := []string{"sh", "nc"}
	if o.WgetBin != "" {
		skip = append(skip, "wget")
	}
	files, err := Busybox(o.BusyboxBin, skip...)
	if err != nil {
		return nil, err
	}
	if o.WgetBin != "" {
		files = append(files, File{Path: "/bin/wget", Source: o.WgetBin, Mode: 0o755})
	}
	for _, b := range []struct{ src, dst string }{
		{o.ShBin, "/bin/sh"}, {o.CurlBin, "/usr/bin/curl"}, {o.NcBin, "/usr/bin/nc"},
	} {
		more, err := HostBinary(b.src, b.dst)
		if err != nil {
			return nil, fmt.Errorf("userland: %w", err)
		}
		files = append(files, more...)
	}
	return append(files,
		File{Path: "/usr/bin/env", Link: "/bin/busybox"},
		File{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		File{Path: "/root", Mode: fs.ModeDir | 0o700},
	), nil
}

// agnhostUsers are the user and group the upstream agnhost image defines.
const agnhostUsers = "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"

// etcFiles are the minimal /etc: users, groups, name service switch (glibc's
// files and dns are built into libc.so.6 since 2.34) and a hosts placeholder
// (kubelet mounts its own /etc/hosts, /etc/resolv.conf and /etc/hostname).
func etcFiles(extraUsers string) []File {
	group := "root:x:0:\nnogroup:x:65534:\n"
	if extraUsers != "" {
		group += "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"
	}
	return []File{
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" + extraUsers)},
		{Path: "/etc/group", Data: []byte(group)},
		{Path: "/etc/nsswitch.conf", Data: []byte("passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nservices: files\nprotocols: files\n")},
		{Path: "/etc/hosts", Data: []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")},
	}
}

// concat returns the files of all parts in a new slice (never sharing one
// part's backing array between images).
func concat(parts ...[]File) []File {
	var out []File
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
