// Package seed loads the original service's JSON data through the normal
// write path, so that events flow to the read model like for any write.
// Every item is created with an idempotency key derived from its position in
// its file, so loading twice creates nothing new.
package seed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Files the loader reads from its directory.
const (
	FactoryFile  = "seed_factory_data.json"
	SprocketFile = "seed_sprocket_types.json"
)

// Store is the write path the loader goes through.
type Store interface {
	CreateSprocket(ctx context.Context, actor domain.Actor, spec domain.SprocketSpec, idem domain.Idempotency) (domain.Sprocket, domain.Receipt, error)
	CreateFactory(ctx context.Context, actor domain.Actor, spec domain.FactorySpec, samples []domain.Sample, idem domain.Idempotency) (domain.Factory, domain.Receipt, error)
}

// Result counts what a load did.
type Result struct {
	FactoriesCreated, FactoriesExisting int
	SprocketsCreated, SprocketsExisting int
}

// Data is the content of the two seed files.
type Data struct {
	Factories []struct {
		Factory struct {
			ChartData domain.ChartData `json:"chart_data"`
		} `json:"factory"`
	} `json:"factories"`
	Sprockets []domain.SprocketSpec `json:"sprockets"`
}

// Read parses and validates the seed files in dir.
func Read(dir string) (Data, error) {
	var d Data
	if err := readJSON(filepath.Join(dir, FactoryFile), &d); err != nil {
		return d, err
	}
	if err := readJSON(filepath.Join(dir, SprocketFile), &d); err != nil {
		return d, err
	}
	for i, f := range d.Factories {
		samples, err := f.Factory.ChartData.Samples()
		if err == nil {
			err = domain.ValidateSamples(samples)
		}
		if err != nil {
			return d, fmt.Errorf("%s: factory %d: %w", FactoryFile, i+1, err)
		}
	}
	for i, s := range d.Sprockets {
		if err := s.Validate(); err != nil {
			return d, fmt.Errorf("%s: sprocket %d: %w", SprocketFile, i+1, err)
		}
	}
	return d, nil
}

func readJSON(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read seed file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("parse %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Load writes the seed data in dir for org. A seed item already loaded is
// left as it is; one whose file content changed since it was loaded is an
// EKEYREUSED error.
func Load(ctx context.Context, store Store, dir string, org int64) (Result, error) {
	var res Result
	actor := domain.System(org, "seed")
	d, err := Read(dir)
	if err != nil {
		return res, err
	}
	for i, f := range d.Factories {
		samples, _ := f.Factory.ChartData.Samples() // validated by Read
		spec := domain.FactorySpec{Name: fmt.Sprintf("Factory %d", i+1)}
		idem := key(fmt.Sprintf("seed:factory:%d", i+1), spec, samples)
		_, r, err := store.CreateFactory(ctx, actor, spec, samples, idem)
		if err != nil {
			return res, fmt.Errorf("seed factory %d: %w", i+1, err)
		}
		if r.Replayed {
			res.FactoriesExisting++
		} else {
			res.FactoriesCreated++
		}
	}
	for i, s := range d.Sprockets {
		idem := key(fmt.Sprintf("seed:sprocket:%d", i+1), s)
		_, r, err := store.CreateSprocket(ctx, actor, s, idem)
		if err != nil {
			return res, fmt.Errorf("seed sprocket %d: %w", i+1, err)
		}
		if r.Replayed {
			res.SprocketsExisting++
		} else {
			res.SprocketsCreated++
		}
	}
	return res, nil
}

func key(name string, content ...any) domain.Idempotency {
	h := sha256.New()
	h.Write([]byte(name))
	for _, c := range content {
		b, _ := json.Marshal(c) // domain values always encode
		h.Write(b)
	}
	return domain.Idempotency{Key: name, Hash: h.Sum(nil)}
}
