package format

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
)

// FooterSize is the fixed size of the footer at the end of a file.
const FooterSize = 128

var (
	footerMagic = [8]byte{'F', 'E', 'R', 'R', 'Y', 'F', 'T', 'R'}
	endMagic    = [8]byte{'F', 'E', 'R', 'R', 'Y', 'E', 'N', 'D'}
)

// Footer locates the sections of a file and carries the hash that covers
// everything but the records (which the block map's checksums cover) and
// the key table (which may be rewritten in place).
type Footer struct {
	RecordsOffset  int64
	RecordCount    uint64
	BlockMapOffset int64
	BlockMapLen    int64
	CatalogOffset  int64
	CatalogLen     int64
	PlainBytes     uint64 // sum of the records' block lengths
	SealedBytes    uint64 // sum of the records' payload lengths
	Hash           [32]byte
}

func (f *Footer) marshalFixed() []byte {
	b := make([]byte, 0, FooterSize)
	b = append(b, footerMagic[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.RecordsOffset))
	b = binary.LittleEndian.AppendUint64(b, f.RecordCount)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.BlockMapOffset))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.BlockMapLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.CatalogOffset))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.CatalogLen))
	b = binary.LittleEndian.AppendUint64(b, f.PlainBytes)
	b = binary.LittleEndian.AppendUint64(b, f.SealedBytes)
	return b // 72 bytes: the part the hash covers
}

func (f *Footer) marshal() []byte {
	b := f.marshalFixed()
	b = append(b, f.Hash[:]...)
	b = append(b, make([]byte, 12)...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return append(b, endMagic[:]...)
}

// fileHash computes the footer hash.
func fileHash(header, blockMap, catalog []byte, f *Footer) [32]byte {
	d := sha256.New()
	d.Write([]byte("ferry/v1/footer"))
	d.Write(header)
	d.Write(blockMap)
	d.Write(catalog)
	d.Write(f.marshalFixed())
	var h [32]byte
	d.Sum(h[:0])
	return h
}

func parseFooter(file string, off int64, b []byte) (*Footer, error) {
	if [8]byte(b[120:128]) != endMagic {
		return nil, corrupt(file, RegionFooter, off+120, "no end marker: the file is truncated or was never committed")
	}
	if crc32.Checksum(b[:116], castagnoli) != binary.LittleEndian.Uint32(b[116:]) {
		return nil, corrupt(file, RegionFooter, off+116, "footer checksum mismatch")
	}
	if [8]byte(b[:8]) != footerMagic {
		return nil, corrupt(file, RegionFooter, off, "bad footer magic")
	}
	for _, c := range b[104:116] {
		if c != 0 {
			return nil, corrupt(file, RegionFooter, off+104, "reserved footer bytes are not zero")
		}
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[8+8*i:]) }
	f := &Footer{
		RecordsOffset:  int64(u(0)),
		RecordCount:    u(1),
		BlockMapOffset: int64(u(2)),
		BlockMapLen:    int64(u(3)),
		CatalogOffset:  int64(u(4)),
		CatalogLen:     int64(u(5)),
		PlainBytes:     u(6),
		SealedBytes:    u(7),
	}
	copy(f.Hash[:], b[72:104])
	// Sections must follow each other exactly up to the footer.
	// Every bound is checked against off before any addition, so a hostile
	// footer cannot overflow its way past the checks.
	if f.RecordsOffset < 0 || f.RecordsOffset > off || f.BlockMapOffset < f.RecordsOffset || f.BlockMapOffset > off ||
		f.BlockMapLen < 8 || f.BlockMapLen > off-f.BlockMapOffset ||
		f.CatalogOffset != f.BlockMapOffset+f.BlockMapLen || f.CatalogLen < 0 || f.CatalogLen > off ||
		f.CatalogOffset+f.CatalogLen != off {
		return nil, corrupt(file, RegionFooter, off, "section offsets are inconsistent")
	}
	return f, nil
}
