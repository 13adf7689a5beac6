// ocirepro replays, with Go's net/http client (the client of the OCI conformance suite), the
// request sequence that made the suite fail with `EOF`: requests with bodies the registry
// answers with an error (sometimes before reading the body), each followed at once by the next
// request on the same keep-alive connection. Go does not retry a PATCH, PUT or POST that fails
// on a connection the server closed without saying `Connection: close`, so every such close
// shows up here as a transport error.
//
// usage: ocirepro -endpoint http://127.0.0.1:PORT -password TOKEN -repo NAME [-rounds N]
//
// Prints one summary line; exits 1 if any request failed at the transport level or got an
// unexpected status.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

type client struct {
	http      *http.Client
	endpoint  string
	password  string
	requests  int
	transport []string
	unexpect  []string
}

func (c *client) do(method, url string, body []byte, headers map[string]string, want int) *http.Response {
	c.requests++
	if strings.HasPrefix(url, "/") {
		url = c.endpoint + url
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		panic(err)
	}
	// Like the conformance suite's client: no GetBody, so nothing with a body is replayable.
	req.GetBody = nil
	req.SetBasicAuth("AWS", c.password)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.transport = append(c.transport, fmt.Sprintf("%s %s: %v", method, url, err))
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		c.unexpect = append(c.unexpect, fmt.Sprintf("%s %s: %d, want %d", method, url, resp.StatusCode, want))
	}
	return resp
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func withQuery(loc, q string) string {
	if strings.Contains(loc, "?") {
		return loc + "&" + q
	}
	return loc + "?" + q
}

func (c *client) startUpload(repo string) string {
	r := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil, 202)
	if r == nil {
		return ""
	}
	return r.Header.Get("Location")
}

// One round of the sequence.
func (c *client) round(repo string, chunk int) {
	octet := map[string]string{"Content-Type": "application/octet-stream"}
	data := random(2 * chunk)
	first, second := data[:chunk], data[chunk:]

	// Chunked upload with an out-of-order chunk first (416, answered before the body).
	loc := c.startUpload(repo)
	if loc == "" {
		return
	}
	c.do("PATCH", loc, second, map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("%d-%d", chunk, 2*chunk-1),
	}, 416)
	r := c.do("PATCH", loc, first, map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("0-%d", chunk-1),
	}, 202)
	if r != nil {
		loc = r.Header.Get("Location")
	}
	// A malformed digest (400 before the body), then the real finish with the last chunk.
	c.do("PUT", withQuery(loc, "digest=sha256:nothex"), second, octet, 400)
	c.do("PUT", withQuery(loc, "digest="+digest(data)), second, octet, 201)
	layer := digest(data)

	// A chunk to an upload that does not exist (404 before the body).
	c.do("PATCH", "/v2/"+repo+"/blobs/uploads/00000000-0000-0000-0000-000000000000", first, octet, 404)

	// Monolithic PUT with the wrong digest (the body is read, then 400).
	loc = c.startUpload(repo)
	if loc != "" {
		c.do("PUT", withQuery(loc, "digest="+digest([]byte("other"))), first, octet, 400)
	}

	// The config blob, monolithic POST.
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}`, layer))
	c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest(cfg), cfg, octet, 201)

	// Manifests: one naming a missing blob (400 after the body), one that is whole.
	mt := "application/vnd.oci.image.manifest.v1+json"
	man := func(l string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}],"annotations":{"pad":"%s"}}`,
			mt, digest(cfg), len(cfg), l, 2*chunk, hex.EncodeToString(random(chunk/4))))
	}
	bad := man(digest([]byte("missing")))
	c.do("PUT", "/v2/"+repo+"/manifests/"+digest(bad), bad, map[string]string{"Content-Type": mt}, 400)
	good := man(layer)
	// A manifest PUT by a digest it does not have (400 after the body).
	c.do("PUT", "/v2/"+repo+"/manifests/"+digest([]byte("x")), good, map[string]string{"Content-Type": mt}, 400)
	c.do("PUT", "/v2/"+repo+"/manifests/"+digest(good), good, map[string]string{"Content-Type": mt}, 201)
	c.do("GET", "/v2/"+repo+"/manifests/"+digest(good), nil, map[string]string{"Accept": mt}, 200)
	// Unauthenticated write (401 before the body), then an authenticated one.
	c.password = "wrong"
	c.do("PUT", "/v2/"+repo+"/manifests/"+digest(good), good, map[string]string{"Content-Type": mt}, 401)
}

func main() {
	endpoint := flag.String("endpoint", "", "registry base URL (http://host:port)")
	password := flag.String("password", "", "registry password for the user AWS")
	repo := flag.String("repo", "conformance", "repository to push to")
	rounds := flag.Int("rounds", 20, "rounds of the sequence")
	chunk := flag.Int("chunk", 256<<10, "chunk size in bytes")
	verbose := flag.Bool("v", false, "print every failure")
	flag.Parse()
	if *endpoint == "" || *password == "" {
		fmt.Fprintln(os.Stderr, "usage: ocirepro -endpoint URL -password TOKEN [-repo NAME] [-rounds N]")
		os.Exit(2)
	}
	c := &client{http: &http.Client{}, endpoint: strings.TrimRight(*endpoint, "/")}
	for i := 0; i < *rounds; i++ {
		c.password = *password
		c.round(*repo, *chunk)
	}
	fmt.Printf("requests=%d transport_errors=%d unexpected_status=%d\n", c.requests, len(c.transport), len(c.unexpect))
	if *verbose || len(c.transport)+len(c.unexpect) > 0 {
		for i, e := range c.transport {
			if i >= 10 && !*verbose {
				break
			}
			fmt.Println("transport:", e)
		}
		for i, e := range c.unexpect {
			if i >= 10 && !*verbose {
				break
			}
			fmt.Println("status:", e)
		}
	}
	if len(c.transport)+len(c.unexpect) > 0 {
		os.Exit(1)
	}
}
