package main

import (
	"testing"

	"github.com/sprockets-api/sprockets/internal/cmdtest"
)

func TestRunContract(t *testing.T) { cmdtest.Contract(t, run) }
