package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// childEnv carries a JSON Config: the test binary then runs only a speaker
// with it (in the namespace it was started in) until killed.
const childEnv = "STRAIT_BGP_CHILD_SPEAKER"

// childPhasedEnv makes the child first bring its sessions up without paths,
// then announce them all, printing the time it starts ("adding UNIXNANO").
const childPhasedEnv = "STRAIT_BGP_CHILD_PHASED"

func runChildSpeaker(cfgJSON string) int {
	if file, ok := strings.CutPrefix(cfgJSON, "@"); ok {
		b, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child speaker:", err)
			return 2
		}
		cfgJSON = string(b)
	}
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child speaker: config:", err)
		return 2
	}
	s, err := New(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child speaker:", err)
		return 1
	}
	ctx := context.Background()
	if os.Getenv(childPhasedEnv) != "" {
		empty := cfg
		empty.Paths = nil
		if err := s.Set(ctx, empty); err != nil {
			fmt.Fprintln(os.Stderr, "child speaker: set:", err)
			return 1
		}
		for up := false; !up; time.Sleep(20 * time.Millisecond) {
			st, err := s.Peers(ctx)
			up = err == nil && len(st) > 0
			for _, ps := range st {
				up = up && ps.State == StateEstablished
			}
		}
		fmt.Printf("adding %d\n", time.Now().UnixNano())
	}
	if err := s.Set(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child speaker: set:", err)
		return 1
	}
	fmt.Println("child speaker: configured")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	_ = s.Close()
	return 0
}
