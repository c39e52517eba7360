package format

import (
	"errors"
	"fmt"
)

// ErrCorrupt matches every error about damaged or malformed file contents.
var ErrCorrupt = errors.New("backup file is damaged")

// Regions of a backup file, as named in errors.
const (
	RegionHeader        = "header"
	RegionKeyTable      = "key table"
	RegionRecordHeader  = "record header"
	RegionRecordPayload = "record payload"
	RegionBlockMap      = "block map"
	RegionCatalog       = "catalog"
	RegionFooter        = "footer"
)

// CorruptError says which part of which file is damaged and where.
type CorruptError struct {
	File   string
	Region string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("backup file %s is damaged: %s at offset %d: %s", e.File, e.Region, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(file, region string, off int64, format string, args ...any) error {
	return &CorruptError{File: file, Region: region, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
