package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunPrintsExportsAndServes(t *testing.T) {
	env := map[string]string{"TRANSIT_LISTEN": "127.0.0.1:0", "TRANSIT_ROOT_TOKEN": "dev-token"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, func(k string) string { return env[k] }, outW, io.Discard)
		outW.Close()
	}()

	var addr, token string
	sc := bufio.NewScanner(outR)
	for sc.Scan() && (addr == "" || token == "") {
		if v, ok := strings.CutPrefix(sc.Text(), "export VAULT_ADDR="); ok {
			addr = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "export VAULT_TOKEN="); ok {
			token = v
		}
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	if !strings.HasPrefix(addr, "http://127.0.0.1:") || token != "dev-token" {
		t.Fatalf("exports: VAULT_ADDR=%q VAULT_TOKEN=%q", addr, token)
	}

	req, err := http.NewRequest(http.MethodGet, addr+"/v1/auth/token/lookup-self", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lookup-self with the printed token: %d", resp.StatusCode)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit status %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop after the context ended")
	}
}

func TestRunRefusesHalfAnAppRole(t *testing.T) {
	env := map[string]string{"TRANSIT_LISTEN": "127.0.0.1:0", "TRANSIT_ROLE_ID": "r"}
	if code := run(context.Background(), func(k string) string { return env[k] }, io.Discard, io.Discard); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
}
