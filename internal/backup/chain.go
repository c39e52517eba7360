package backup

import (
	"crypto/cipher"
	"fmt"
	"os"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// chainFile is one opened file of a chain.
type chainFile struct {
	point    *repo.Point
	f        *format.File
	fd       *os.File
	sessions map[keys.KeyID]*keys.Session // nil when opened without keys
}

func (cf *chainFile) meta() cipher.AEAD {
	if !cf.f.Header.Encrypted() {
		return nil
	}
	return cf.sessions[cf.f.CatalogKeyID()].Meta()
}

// openChain opens the files of a chain from its full up to p. With a
// keyring it also opens their session secrets; kr nil opens none.
func openChain(r *repo.Repo, backup string, c *repo.Chain, p *repo.Point, kr *keyring.Keyring) ([]*chainFile, error) {
	pts, err := c.ChainUpTo(p)
	if err != nil {
		return nil, err
	}
	var out []*chainFile
	for _, q := range pts {
		f, fd, err := format.OpenPath(r.Path(backup, q))
		if err != nil {
			closeChain(out)
			return nil, err
		}
		cf := &chainFile{point: q, f: f, fd: fd}
		out = append(out, cf)
		if f.Header.FileID != q.FileID || f.Header.ChainID != c.ID {
			closeChain(out)
			return nil, fmt.Errorf("backup file %s changed since it was listed", f.Name)
		}
		if kr != nil && f.Header.Encrypted() {
			if cf.sessions, err = kr.Open(f); err != nil {
				closeChain(out)
				return nil, err
			}
		}
	}
	return out, nil
}

func closeChain(files []*chainFile) {
	for _, cf := range files {
		cf.fd.Close()
	}
}

// pointView is a restore point opened for reading: its chain's files up to
// it, its catalog, and where the newest record of each of its blocks lies.
type pointView struct {
	ix    *repo.Index
	point *repo.Point
	chain *repo.Chain
	files []*chainFile
	cat   *format.Catalog
	bix   map[format.BlockKey]loc
}

func (v *pointView) close() { closeChain(v.files) }

// openPoint opens point (an id prefix; empty for the latest) of a backup
// with the keys in kr, and checks that every block of it is stored.
func openPoint(r *repo.Repo, backup, point string, kr *keyring.Keyring) (*pointView, error) {
	ix, err := r.Index(backup)
	if err != nil {
		return nil, err
	}
	p, c, err := ix.Find(point)
	if err != nil {
		return nil, err
	}
	files, err := openChain(r, backup, c, p, kr)
	if err != nil {
		return nil, err
	}
	v := &pointView{ix: ix, point: p, chain: c, files: files}
	last := files[len(files)-1]
	if v.cat, err = last.f.Catalog(last.meta()); err != nil {
		v.close()
		return nil, err
	}
	v.bix = blockIndex(files)
	if err := checkResolvable(v.cat, v.bix, last); err != nil {
		v.close()
		return nil, err
	}
	return v, nil
}

// loc is where the newest copy of a block lies in a chain.
type loc struct {
	file  int32
	entry int32
}

// blockIndex maps every block stored in files[0..n] to its newest record.
func blockIndex(files []*chainFile) map[format.BlockKey]loc {
	size := 0
	for _, cf := range files {
		size += len(cf.f.Entries)
	}
	ix := make(map[format.BlockKey]loc, size)
	for fi, cf := range files {
		for ei := range cf.f.Entries {
			ix[cf.f.Entries[ei].Key()] = loc{int32(fi), int32(ei)}
		}
	}
	return ix
}

// checkResolvable makes sure every block of cat has a record in the chain.
func checkResolvable(cat *format.Catalog, ix map[format.BlockKey]loc, last *chainFile) error {
	for i := range cat.Objects {
		o := &cat.Objects[i]
		for b := range o.Digests {
			if _, ok := ix[format.BlockKey{Object: o.ID, Block: uint64(b)}]; !ok {
				return &format.CorruptError{File: last.f.Name, Region: format.RegionCatalog, Offset: last.f.CatalogOffset(),
					Reason: fmt.Sprintf("no file of the chain stores block %d of %s (object %d)", b, o.Path, o.ID)}
			}
		}
	}
	return nil
}
