package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// childEnv carries a JSON Config: the test binary then runs only a speaker
// with it (in the namespace it was started in) until killed.
const childEnv = "STRAIT_BGP_CHILD_SPEAKER"

func runChildSpeaker(cfgJSON string) int {
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
	if err := s.Set(context.Background(), cfg); err != nil {
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
