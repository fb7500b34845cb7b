package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/paystream/paystream/pkg/payout"
)

// errBadRecord marks a CSV row that cannot be read; the rows after it still are.
var errBadRecord = errors.New("bad csv record")

// record is one input record: its line number and the request as JSON bytes (a CSV row is
// converted to JSON so that both formats go through the same strict payout.Decode). err is
// set when the record could not even be read.
type record struct {
	line int
	data []byte
	err  error
}

// readRecords calls fn for each record of r in format "jsonl" or "csv" until fn returns
// false. It returns a read error that stops the whole input.
func readRecords(r io.Reader, format string, fn func(record) bool) error {
	if format == "csv" {
		return readCSV(r, fn)
	}
	return readJSONL(r, fn)
}

// readJSONL yields each non-blank line. A line longer than payout.MaxMessageSize is
// reported (payout.ErrTooLarge) and skipped without being held in memory.
func readJSONL(r io.Reader, fn func(record) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for line := 1; ; line++ {
		data, tooLarge, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		rec := record{line: line, data: bytes.TrimSpace(data)}
		if tooLarge {
			rec.err = &payout.DecodeError{Err: payout.ErrTooLarge}
		}
		if (len(rec.data) > 0 || rec.err != nil) && !fn(rec) {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// readLine returns the next line without its newline, or tooLarge when it is longer than
// payout.MaxMessageSize (the rest of the line is discarded).
func readLine(br *bufio.Reader) (line []byte, tooLarge bool, err error) {
	for {
		chunk, isPrefix, err := br.ReadLine()
		if !tooLarge {
			line = append(line, chunk...)
			if len(line) > payout.MaxMessageSize {
				tooLarge, line = true, nil
			}
		}
		if err != nil || !isPrefix {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				err = nil
			}
			return line, tooLarge, err
		}
	}
}

// utf8BOM is the byte order mark spreadsheets put at the start of a UTF-8 CSV file.
const utf8BOM = "\uFEFF"

// readCSV reads a header row of JSON field names, then one request per row. A leading UTF-8
// BOM is skipped. Empty cells are left out; amount is passed on as a JSON number when it
// looks like one, so that floats are refused by payout.Decode exactly as in JSON lines;
// transfer_scene_report_infos is passed on as JSON when its cell is JSON (the array of rows),
// so payout.Decode checks it as strictly as in JSON lines. A
// row encoding/csv cannot parse is reported with the line it starts on (errBadRecord), and
// reading goes on with the next row where encoding/csv can find one (an unterminated quote
// runs to the end of the input). A header that cannot be read, and any I/O error, stop the
// input.
func readCSV(r io.Reader, fn func(record) bool) error {
	br := bufio.NewReader(r)
	if b, err := br.Peek(len(utf8BOM)); err == nil && string(b) == utf8BOM {
		br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	header, err := cr.Read()
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("csv header: empty input, want a header row of field names")
	case err != nil:
		return fmt.Errorf("csv header: %w", err)
	}
	if i := firstDuplicate(header); i >= 0 {
		return fmt.Errorf("csv header: column %q repeated", header[i])
	}
	for {
		row, err := cr.Read()
		var pe *csv.ParseError
		var rec record
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.As(err, &pe):
			// FieldPos must not be called after an error (it panics); the error knows the line.
			rec = record{line: pe.StartLine, err: fmt.Errorf("%w: %w", errBadRecord, err)}
		case err != nil:
			return err
		default:
			rec.line, _ = cr.FieldPos(0)
			rec.data, rec.err = csvJSON(header, row)
		}
		if !fn(rec) {
			return nil
		}
	}
}

func csvJSON(header, row []string) ([]byte, error) {
	obj := make(map[string]any, len(header))
	for i, name := range header {
		v := row[i]
		if v == "" {
			continue
		}
		if name == "amount" && looksNumeric(v) {
			obj[name] = json.Number(v)
			continue
		}
		if name == "transfer_scene_report_infos" && json.Valid([]byte(v)) {
			obj[name] = json.RawMessage(v) // the rows as a JSON array in one cell
			continue
		}
		obj[name] = v
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	return data, nil
}

// looksNumeric reports whether v is a JSON number literal.
func looksNumeric(v string) bool {
	return v != "" && (v[0] == '-' || '0' <= v[0] && v[0] <= '9') && json.Valid([]byte(v))
}

func firstDuplicate(names []string) int {
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return i
		}
	}
	return -1
}
