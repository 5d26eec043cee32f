// Command wget is the lab images' wget: the subset of busybox wget's
// command line that the upstream e2e tests and the lab use, in pure Go and
// static. Debian's busybox 1.35 wget crashes (SIGSEGV) whenever -T is
// given, and the upstream Services specs call `wget -q -T 1 -O - URL`.
//
//	wget [-q] [-s|--spider] [-S] [-T SEC|--timeout=SEC] [-O FILE|-O -]
//	     [--header 'K: V']... [-U AGENT] [-Y on|off] URL...
//
// As busybox: exit status 0 when every URL was fetched, 1 otherwise, with
// "wget: ..." on standard error; a response other than 2xx is an error;
// without -O the body goes to the last path element of the URL (or
// index.html); -O - writes to standard output.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

type options struct {
	quiet, spider, headers bool
	timeout                time.Duration
	output                 string
	header                 http.Header
	agent                  string
	urls                   []string
}

func parse(args []string) (options, error) {
	o := options{header: http.Header{}, agent: "Wget"}
	value := func(i *int, name string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("option requires an argument: %s", name)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var err error
		switch {
		case a == "--quiet":
			o.quiet = true
		case a == "--spider":
			o.spider = true
		case a == "--server-response":
			o.headers = true
		case a == "--header" || a == "--timeout" || a == "--output-document" || a == "--user-agent":
			var v string
			if v, err = value(&i, a); err == nil {
				err = o.set(long(a), v)
			}
		case strings.HasPrefix(a, "--") && strings.Contains(a, "="):
			name, v, _ := strings.Cut(a, "=")
			if long(name) == "" {
				return o, fmt.Errorf("unrecognized option '%s'", a)
			}
			err = o.set(long(name), v)
		case len(a) > 1 && a[0] == '-' && a[1] != '-':
			// getopt: booleans cluster (-qs); an option with a value takes
			// the rest of the word (-T1, -O-) or the next word.
			for j := 1; j < len(a) && err == nil; j++ {
				switch c := a[j]; c {
				case 'q':
					o.quiet = true
				case 's':
					o.spider = true
				case 'S':
					o.headers = true
				case 'T', 'O', 'U', 'Y':
					v := a[j+1:]
					if v == "" {
						if v, err = value(&i, "-"+string(c)); err != nil {
							return o, err
						}
					}
					err = o.set("-"+string(c), v)
					j = len(a)
				default:
					return o, fmt.Errorf("unrecognized option '-%c'", c)
				}
			}
		case strings.HasPrefix(a, "-") && a != "-":
			return o, fmt.Errorf("unrecognized option '%s'", a)
		default:
			o.urls = append(o.urls, a)
		}
		if err != nil {
			return o, err
		}
	}
	if len(o.urls) == 0 {
		return o, errors.New("no URL given (usage: wget [-q] [-s] [-S] [-T SEC] [-O FILE] [--header 'K: V'] URL...)")
	}
	return o, nil
}

// long maps a long option that takes a value to its short form ("" when
// there is none).
func long(name string) string {
	switch name {
	case "--timeout":
		return "-T"
	case "--output-document":
		return "-O"
	case "--user-agent":
		return "-U"
	case "--header":
		return "--header"
	}
	return ""
}

func (o *options) set(flag, v string) error {
	switch flag {
	case "-T":
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0 {
			return fmt.Errorf("invalid timeout %q", v)
		}
		o.timeout = time.Duration(sec * float64(time.Second))
	case "-O":
		o.output = v
	case "-U":
		o.agent = v
	case "-Y": // proxy on/off: no proxy is ever used
	case "--header":
		k, val, ok := strings.Cut(v, ":")
		if !ok {
			return fmt.Errorf("invalid header %q", v)
		}
		o.header.Add(strings.TrimSpace(k), strings.TrimSpace(val))
	}
	return nil
}

func fetch(ctx context.Context, o options, rawURL string, stdout, stderr io.Writer) error {
	if !strings.Contains(rawURL, "://") {
		rawURL = "http://" + rawURL
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	method := http.MethodGet
	if o.spider {
		method = http.MethodHead
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return fmt.Errorf("bad address '%s'", rawURL)
	}
	req.Header = o.header.Clone()
	req.Header.Set("User-Agent", o.agent)
	if h := o.header.Get("Host"); h != "" {
		req.Host = h
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DialContext:       (&net.Dialer{}).DialContext,
		DisableKeepAlives: true,
	}}
	if !o.quiet && !o.spider {
		fmt.Fprintf(stderr, "Connecting to %s\n", req.URL.Host)
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errors.New("download timed out")
		}
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("can't connect to remote host (%s): %v", req.URL.Host, op.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if o.headers {
		fmt.Fprintf(stderr, "  %s %s\n", resp.Proto, resp.Status)
		for k, vs := range resp.Header {
			for _, v := range vs {
				fmt.Fprintf(stderr, "  %s: %s\n", k, v)
			}
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("server returned error: %s %s", resp.Proto, resp.Status)
	}
	if o.spider {
		if !o.quiet {
			fmt.Fprintln(stderr, "remote file exists")
		}
		return nil
	}
	var w io.Writer
	switch name := o.output; name {
	case "-":
		w = stdout
	default:
		if name == "" {
			name = path.Base(req.URL.Path)
			if name == "/" || name == "." || name == "" {
				name = "index.html"
			}
		}
		f, err := os.Create(name)
		if err != nil {
			return fmt.Errorf("can't open '%s': %w", name, err)
		}
		defer f.Close()
		w = f
		if !o.quiet {
			fmt.Fprintf(stderr, "saving to '%s'\n", name)
		}
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errors.New("download timed out")
		}
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "wget:", err)
		return 1
	}
	status := 0
	for _, u := range o.urls {
		if err := fetch(context.Background(), o, u, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "wget:", err)
			status = 1
		}
	}
	return status
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
