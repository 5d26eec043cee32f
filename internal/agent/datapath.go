package agent

import (
	"log/slog"

	"github.com/strait-net/strait/internal/datapath"
)

func openLinuxDatapath(log *slog.Logger) (PodDatapath, func(), error) {
	dp, err := datapath.New(datapath.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return dp, dp.Close, nil
}
