package datagen

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// textSlack bounds how far the last line or paragraph can overrun the
// requested length; none the generator emits is longer.
const textSlack = 1024

// textGen writes text-like bytes: runs of log lines, prose paragraphs and
// CSV records, each piece copied from the fixed vocabulary below and chosen
// by bits of the ChaCha8 stream. Choosing from tables keeps it fast and
// keeps the output as compressible as real text of the same kinds.
//
// Changing anything here changes the generated data; the golden hashes in
// the tests will say so.
type textGen struct {
	rng *rand.ChaCha8
	r   [256]uint16 // draws from rng, used from r[i] on
	i   uint8
	b   []byte

	day   int    // index into dates
	sec   int    // seconds into the day of the log clock
	csvID uint64 // id of the next CSV record
	reqID uint64 // next request_id in log lines
	col   int    // column in the current prose line
}

// genText appends text for one cell to dst until it holds at least n
// bytes, and returns it. The output depends only on rng's key and cell.
func genText(dst []byte, rng *rand.ChaCha8, cell uint64, n int) []byte {
	g := textGen{rng: rng, b: dst}
	g.refill()
	g.day = int(cell % uint64(len(dates)))
	g.sec = g.pick32(86400)
	g.csvID = 1000 + cell*1000 + uint64(g.pick(1000))
	g.reqID = 100000 + cell*10000 + uint64(g.pick(10000))
	for len(g.b) < n {
		g.ensure()
		lines := 4 + g.pick(28)
		switch style := g.pick(8); {
		case style < 4:
			for i := 0; i < lines && len(g.b) < n; i++ {
				g.logLine()
			}
		case style < 6:
			g.csvHeader()
			for i := 0; i < lines && len(g.b) < n; i++ {
				g.csvRecord()
			}
		default:
			for i := 0; i < lines/4+1 && len(g.b) < n; i++ {
				g.paragraph()
			}
		}
	}
	return g.b
}

// pick returns a number in [0, n) for n <= 1<<16, from the next 16 bits
// of the ChaCha8 stream, by multiply-shift; the method is ours, so it
// cannot change under us. It has no refill branch, so that it inlines: the
// callers reserve draws with ensure before each line, sentence or record.
func (g *textGen) pick(n int) int {
	x := g.r[g.i]
	g.i++
	return int(uint64(x) * uint64(n) >> 16)
}

// maxDraws bounds the picks between two calls of ensure; no line, sentence
// or record takes more.
const maxDraws = 64

// ensure makes maxDraws picks available, refilling the whole draw buffer
// from the ChaCha8 stream and dropping what was left when fewer remain.
func (g *textGen) ensure() {
	if int(g.i) <= len(g.r)-maxDraws {
		return
	}
	g.refill()
}

func (g *textGen) refill() {
	var raw [2 * len(g.r)]byte
	g.rng.Read(raw[:])
	for i := range g.r {
		g.r[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	g.i = 0
}

// pick32 is pick for n up to 1<<32; it takes two 16-bit draws.
func (g *textGen) pick32(n int) int {
	x := uint64(g.pick(1<<16))<<16 | uint64(g.pick(1<<16))
	return int(x * uint64(n) >> 32)
}

func (g *textGen) str(list []string) { g.b = append(g.b, list[g.pick(len(list))]...) }

func (g *textGen) tick(maxStep int) {
	g.sec += g.pick(maxStep + 1)
	if g.sec >= 86400 {
		g.sec -= 86400
		g.day = (g.day + 1) % len(dates)
	}
}

func (g *textGen) clock(sep byte) {
	g.b = append(g.b, dates[g.day]...)
	g.b = append(g.b, sep)
	h, m, s := g.sec/3600, g.sec/60%60, g.sec%60
	g.b = append(g.b, twoDigits[h]...)
	g.b = append(g.b, ':')
	g.b = append(g.b, twoDigits[m]...)
	g.b = append(g.b, ':')
	g.b = append(g.b, twoDigits[s]...)
}

func (g *textGen) logLine() {
	g.ensure()
	g.tick(3)
	g.clock('T')
	ms := g.pick(1000)
	g.b = append(g.b, '.')
	g.b = append(g.b, twoDigits[ms/10]...)
	g.b = append(g.b, byte('0'+ms%10), 'Z', ' ')
	g.str(logLevels)
	g.b = append(g.b, " ["...)
	g.str(components)
	g.b = append(g.b, '-')
	g.b = append(g.b, byte('0'+g.pick(8)))
	g.b = append(g.b, "] "...)
	g.str(logMessages)
	// Keys step forward through the table so that a line never repeats
	// one and neighbouring keys tend to come together, as in real logs.
	k := g.pick(len(logKeys))
	for i := g.pick(4); i >= 0; i-- {
		key := &logKeys[k]
		g.b = append(g.b, ' ')
		g.b = append(g.b, key.name...)
		g.b = append(g.b, '=')
		switch {
		case key.vals != nil:
			g.str(key.vals)
		case key.max == 0:
			g.b = strconv.AppendUint(g.b, g.reqID, 10)
			g.reqID++
		default:
			g.b = strconv.AppendInt(g.b, int64(g.pick32(key.max)), 10)
		}
		k = (k + 1 + g.pick(3)) % len(logKeys)
	}
	g.b = append(g.b, '\n')
}

func (g *textGen) csvHeader() {
	g.b = append(g.b, "id,first_name,last_name,email,city,country,amount,currency,created_at,status\n"...)
}

func (g *textGen) csvRecord() {
	g.ensure()
	g.tick(90)
	g.b = strconv.AppendUint(g.b, g.csvID, 10)
	g.csvID++
	g.b = append(g.b, ',')
	f, l := g.pick(len(firstNames)), g.pick(len(lastNames))
	g.b = append(g.b, firstNames[f]...)
	g.b = append(g.b, ',')
	g.b = append(g.b, lastNames[l]...)
	g.b = append(g.b, ',')
	g.b = append(g.b, lowerFirst[f]...)
	g.b = append(g.b, '.')
	g.b = append(g.b, lowerLast[l]...)
	g.b = append(g.b, '@')
	g.str(mailDomains)
	g.b = append(g.b, ',')
	c := &cities[g.pick(len(cities))]
	g.b = append(g.b, c.name...)
	g.b = append(g.b, ',')
	g.b = append(g.b, c.country...)
	g.b = append(g.b, ',')
	g.b = strconv.AppendInt(g.b, int64(1+g.pick(500)), 10)
	g.str(priceCents)
	g.b = append(g.b, ',')
	g.b = append(g.b, c.currency...)
	g.b = append(g.b, ',')
	g.clock(' ')
	g.b = append(g.b, ',')
	g.str(orderStatus)
	g.b = append(g.b, '\n')
}

// paragraph writes a few sentences wrapped at 72 columns and a blank line.
// Sentences are put together from phrases rather than single words: word
// salad would compress worse than any real prose, phrases recur as they do
// in real writing.
func (g *textGen) paragraph() {
	g.col = 0
	for s := 2 + g.pick(5); s > 0; s-- {
		g.ensure()
		first := true
		if g.pick(4) == 0 {
			g.phrase(openers, first)
			g.addStr(",")
			first = false
		}
		g.phrase(subjects, first)
		g.phrase(verbs, false)
		g.phrase(objects, false)
		if g.pick(2) == 0 {
			g.phrase(closers, false)
		}
		g.addStr(".")
	}
	g.b = append(g.b, "\n\n"...)
}

// phrase appends one phrase of list, capitalised when it starts the
// sentence, breaking the line between words where it would pass column 72.
func (g *textGen) phrase(list phrases, capital bool) {
	for i, w := range list[g.pick(len(list))] {
		switch {
		case g.col == 0:
		case g.col+1+len(w) > 72:
			g.b = append(g.b, '\n')
			g.col = 0
		default:
			g.b = append(g.b, ' ')
			g.col++
		}
		if capital && i == 0 && w[0] >= 'a' && w[0] <= 'z' {
			g.b = append(g.b, w[0]-'a'+'A')
			w = w[1:]
			g.col++
		}
		g.b = append(g.b, w...)
		g.col += len(w)
	}
}

// phrases holds each phrase split into words ahead of time, for wrapping.
type phrases [][]string

func splitAll(list ...string) phrases {
	t := make(phrases, len(list))
	for i, p := range list {
		t[i] = strings.Fields(p)
	}
	return t
}

func (g *textGen) addStr(s string) {
	g.b = append(g.b, s...)
	g.col += len(s)
}

var (
	twoDigits = func() (t [100]string) {
		for i := range t {
			t[i] = string([]byte{byte('0' + i/10), byte('0' + i%10)})
		}
		return t
	}()

	// dates is a year of days for the log clock; time.Date's calendar
	// arithmetic is fixed, so the table is too.
	dates = func() (t [366]string) {
		for i := range t {
			t[i] = time.Date(2024, 1, 1+i, 0, 0, 0, 0, time.UTC).Format("2006-01-02")
		}
		return t
	}()

	// Repeats weight the choice: mostly INFO, now and then an ERROR.
	logLevels = []string{
		"INFO ", "INFO ", "INFO ", "INFO ", "INFO ", "INFO ", "INFO ", "INFO ",
		"INFO ", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "WARN ", "WARN ", "ERROR",
	}

	components = []string{
		"api", "auth", "scheduler", "worker", "db", "cache", "http", "grpc",
		"storage", "indexer", "mailer", "billing", "sync", "gc", "metrics", "router",
	}

	logMessages = []string{
		"request completed", "request started", "cache miss", "cache hit",
		"connection opened", "connection closed", "connection reset by peer",
		"job queued", "job started", "job finished", "job failed, will retry",
		"user logged in", "user logged out", "session expired", "token refreshed",
		"slow query", "query executed", "transaction committed", "transaction rolled back",
		"upload finished", "download finished", "checksum verified", "checksum mismatch",
		"config reloaded", "health check passed", "health check failed",
		"rate limit exceeded", "retrying after backoff", "lease renewed", "lease lost",
		"snapshot written", "compaction started", "compaction finished", "index rebuilt",
		"message published", "message acknowledged", "email sent", "invoice created",
		"payment captured", "payment declined", "disk usage above threshold",
		"garbage collection finished", "metrics flushed", "peer joined", "peer left",
		"certificate renewed", "shutting down", "listening",
	}

	logKeys = []struct {
		name string
		vals []string
		max  int
	}{
		{name: "user", vals: []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar", "peggy", "trent", "victor", "walter"}},
		{name: "method", vals: []string{"GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"}},
		{name: "path", vals: []string{"/api/v1/items", "/api/v1/users", "/api/v1/orders", "/api/v1/login", "/healthz", "/metrics", "/api/v2/search", "/static/app.js", "/api/v1/invoices", "/api/v1/upload", "/", "/favicon.ico"}},
		{name: "status", vals: []string{"200", "200", "200", "200", "200", "201", "204", "301", "304", "400", "401", "403", "404", "404", "500", "503"}},
		{name: "duration_ms", max: 2000},
		{name: "bytes", max: 1 << 16},
		{name: "job_id", max: 100000},
		{name: "attempt", max: 6},
		{name: "region", vals: []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "ap-northeast-1"}},
		{name: "table", vals: []string{"users", "orders", "items", "sessions", "invoices", "events"}},
		{name: "rows", max: 500},
		{name: "peer", vals: []string{"10.0.0.11:7000", "10.0.0.12:7000", "10.0.0.13:7000", "10.0.1.21:7000", "10.0.1.22:7000"}},
		{name: "queue", vals: []string{"default", "mail", "billing", "reports", "low"}},
		{name: "err", vals: []string{"\"context deadline exceeded\"", "\"connection refused\"", "\"no such host\"", "\"i/o timeout\"", "EOF", "\"permission denied\""}},
		{name: "version", vals: []string{"1.4.2", "1.4.3", "1.5.0", "2.0.0-rc1"}},
		{name: "request_id"}, // max 0: a counter, as request ids usually are
	}

	firstNames = []string{
		"Maria", "Jan", "Anna", "Peter", "Sofia", "Lukas", "Emma", "Noah",
		"Olivia", "Liam", "Mia", "Elias", "Laura", "David", "Julia", "Paul",
		"Sara", "Felix", "Lena", "Jonas", "Clara", "Leon", "Hannah", "Max",
		"Marie", "Tom", "Eva", "Ben", "Nina", "Finn", "Lea", "Luca",
		"Ida", "Oskar", "Alma", "Emil", "Greta", "Anton", "Ella", "Theo",
		"Ines", "Hugo", "Rosa", "Karl", "Vera", "Otto", "Ruth", "Erik",
		"Hanna", "Aaron", "Lina", "Moritz", "Zoe", "Samuel", "Mila", "Jakob",
		"Frida", "Henry", "Marta", "Oliver", "Helena", "Victor", "Irene", "Adam",
	}
	lastNames = []string{
		"Schmidt", "Muller", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
		"Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz",
		"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
		"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy",
		"Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
		"Jansen", "Visser", "Smit", "Bakker", "Nilsson", "Larsson", "Olsen", "Hansen",
		"Novak", "Horvat", "Kovac", "Nowak", "Kowalski", "Silva", "Santos", "Pereira",
		"Lopez", "Gonzalez", "Perez", "Sanchez", "Ramirez", "Torres", "Flores", "Rivera",
	}
	lowerFirst = lowerAll(firstNames)
	lowerLast  = lowerAll(lastNames)

	mailDomains = []string{"example.com", "example.org", "example.net", "mail.example", "corp.example", "test.example"}

	cities = []struct{ name, country, currency string }{
		{"Berlin", "DE", "EUR"}, {"Hamburg", "DE", "EUR"}, {"Munich", "DE", "EUR"}, {"Cologne", "DE", "EUR"},
		{"Paris", "FR", "EUR"}, {"Lyon", "FR", "EUR"}, {"Marseille", "FR", "EUR"}, {"Toulouse", "FR", "EUR"},
		{"Rome", "IT", "EUR"}, {"Milan", "IT", "EUR"}, {"Naples", "IT", "EUR"}, {"Turin", "IT", "EUR"},
		{"Madrid", "ES", "EUR"}, {"Barcelona", "ES", "EUR"}, {"Valencia", "ES", "EUR"}, {"Seville", "ES", "EUR"},
		{"Amsterdam", "NL", "EUR"}, {"Rotterdam", "NL", "EUR"}, {"Utrecht", "NL", "EUR"}, {"Vienna", "AT", "EUR"},
		{"Zurich", "CH", "CHF"}, {"Geneva", "CH", "CHF"}, {"Basel", "CH", "CHF"}, {"Bern", "CH", "CHF"},
		{"London", "GB", "GBP"}, {"Manchester", "GB", "GBP"}, {"Leeds", "GB", "GBP"}, {"Glasgow", "GB", "GBP"},
		{"Stockholm", "SE", "SEK"}, {"Gothenburg", "SE", "SEK"}, {"Oslo", "NO", "NOK"}, {"Bergen", "NO", "NOK"},
		{"Copenhagen", "DK", "DKK"}, {"Aarhus", "DK", "DKK"}, {"Warsaw", "PL", "PLN"}, {"Krakow", "PL", "PLN"},
		{"Prague", "CZ", "CZK"}, {"Brno", "CZ", "CZK"}, {"Lisbon", "PT", "EUR"}, {"Porto", "PT", "EUR"},
		{"New York", "US", "USD"}, {"Chicago", "US", "USD"}, {"Seattle", "US", "USD"}, {"Austin", "US", "USD"},
		{"Toronto", "CA", "CAD"}, {"Montreal", "CA", "CAD"}, {"Dublin", "IE", "EUR"}, {"Helsinki", "FI", "EUR"},
	}

	priceCents = []string{".00", ".00", ".50", ".90", ".95", ".99", ".99", ".49"}

	orderStatus = []string{"paid", "paid", "paid", "paid", "shipped", "shipped", "pending", "refunded"}

	openers = splitAll(
		"in the morning", "after a long night", "as usual", "for the first time",
		"every evening", "once the backup had finished", "without any warning",
		"a few days later", "at the end of the week", "in the old office",
		"before the storm came", "when the lights went out", "according to the report",
		"on the other side of the river", "during the winter", "by the time anyone noticed",
	)
	subjects = splitAll(
		"the operator", "the night operator", "the engineer", "the old server",
		"the new machine", "a small team", "the customer", "the manager",
		"nobody in the building", "the backup system", "the archive", "our neighbour",
		"the student", "the teacher", "everyone on the list", "the storage array",
		"the quiet man from accounting", "the network", "a stranger", "the whole village",
		"the program", "the last disk", "the courier", "the committee",
		"she", "he", "they", "we", "it", "the river", "the city", "the family",
	)
	verbs = splitAll(
		"restored", "copied", "checked", "counted", "found", "lost", "moved",
		"encrypted", "compressed", "wrote down", "read", "carried", "opened",
		"closed", "replaced", "forgot", "remembered", "sent", "received", "kept",
		"looked at", "asked about", "talked about", "waited for", "cleaned",
		"repaired", "measured", "ignored", "packed", "sorted", "labelled", "verified",
	)
	objects = splitAll(
		"the files", "every file", "the old records", "a letter", "the report",
		"the numbers", "the last copy", "the missing volume", "the whole archive",
		"a long list of names", "the schedule", "the key", "the blocks", "the tapes",
		"the garden", "the broken window", "the question", "the answer",
		"the photographs", "the invoices", "the cables", "the logs", "the notes",
		"the map of the city", "the boxes in the basement", "the weather",
		"the results", "the data", "the contract", "the budget", "the music", "everything",
	)
	closers = splitAll(
		"again", "slowly", "carefully", "twice", "before midnight", "without a word",
		"as quickly as possible", "one more time", "in the basement", "by hand",
		"for the auditors", "just in case", "with great care", "in silence",
		"before anyone asked", "the same way as last year",
	)
)

func lowerAll(s []string) []string {
	t := make([]string, len(s))
	for i, w := range s {
		t[i] = strings.ToLower(w)
	}
	return t
}
