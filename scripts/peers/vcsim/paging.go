package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// pendingPages holds the objects of a RetrievePropertiesEx answer not yet sent, for ContinueRetrievePropertiesEx.
type pendingPages struct {
	head, tail []byte   // the simulator's envelope up to and including <soapenv:Body>, and from </soapenv:Body>
	objects    [][]byte // the <objects> elements still to send, as the simulator wrote them
	max        int
}

// retrievePropertiesEx pages the simulator's answer (which always holds every object) as vCenter does: at most
// options/maxObjects objects per answer, and a token for ContinueRetrievePropertiesEx when more remain.
func (e *extensions) retrievePropertiesEx(w http.ResponseWriter, r *http.Request, call *soapCall, body []byte) {
	res := e.forward(r, body)
	max, ok := parseInt(call.text("options/maxObjects"))
	if res.Code != http.StatusOK || !ok || max <= 0 {
		relay(w, res)
		return
	}
	answer, err := splitRetrieveResult(res.Body.Bytes())
	if err != nil || len(answer.objects) <= int(max) {
		relay(w, res)
		return
	}
	original := res.Body.Bytes()
	token := e.savePages(&pendingPages{
		head:    original[:answer.bodyStart],
		tail:    original[answer.bodyEnd:],
		objects: answer.objects[max:],
		max:     int(max),
	})
	var out bytes.Buffer
	out.Write(original[:answer.objectsStart])
	out.WriteString("<token>" + xmlText(token) + "</token>")
	for _, object := range answer.objects[:max] {
		out.Write(object)
	}
	out.Write(original[answer.objectsEnd:])
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes())
}

func (e *extensions) savePages(p *pendingPages) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextToken++
	token := fmt.Sprintf("%d", e.nextToken)
	e.pages[token] = p
	return token
}

func (e *extensions) continueRetrievePropertiesEx(w http.ResponseWriter, r *http.Request, call *soapCall) {
	if fault := e.checkSession(r); fault != nil {
		relay(w, fault)
		return
	}
	token := call.text("token")
	e.mu.Lock()
	p, ok := e.pages[token]
	delete(e.pages, token)
	e.mu.Unlock()
	if !ok {
		writeFault(w, "A specified parameter was not correct: token", invalidArgumentFault("token"))
		return
	}
	if call.method == "CancelRetrievePropertiesEx" {
		writeResponse(w, `<CancelRetrievePropertiesExResponse xmlns="urn:vim25"></CancelRetrievePropertiesExResponse>`)
		return
	}
	var out bytes.Buffer
	out.Write(p.head)
	out.WriteString(`<ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval>`)
	send := p.objects
	if len(send) > p.max {
		rest := &pendingPages{head: p.head, tail: p.tail, objects: send[p.max:], max: p.max}
		send = send[:p.max]
		out.WriteString("<token>" + xmlText(e.savePages(rest)) + "</token>")
	}
	for _, object := range send {
		out.Write(object)
	}
	out.WriteString(`</returnval></ContinueRetrievePropertiesExResponse>`)
	out.Write(p.tail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes())
}

type retrieveResult struct {
	bodyStart, bodyEnd       int // after <soapenv:Body>, at </soapenv:Body>
	objectsStart, objectsEnd int // at the first <objects>, after the last </objects>
	objects                  [][]byte
}

// splitRetrieveResult finds the byte ranges of the <objects> elements of a RetrievePropertiesEx answer.
func splitRetrieveResult(body []byte) (*retrieveResult, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	result := &retrieveResult{bodyStart: -1, bodyEnd: -1, objectsStart: -1}
	var stack []string
	objectStart := -1
	for {
		before := int(d.InputOffset())
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			path := strings.Join(stack, "/")
			if path == "Envelope/Body" {
				result.bodyStart = int(d.InputOffset())
			}
			if path == "Envelope/Body/RetrievePropertiesExResponse/returnval/objects" {
				objectStart = before
				if result.objectsStart < 0 {
					result.objectsStart = before
				}
			}
		case xml.EndElement:
			path := strings.Join(stack, "/")
			if path == "Envelope/Body" {
				result.bodyEnd = before
			}
			if path == "Envelope/Body/RetrievePropertiesExResponse/returnval/objects" {
				end := int(d.InputOffset())
				result.objects = append(result.objects, body[objectStart:end])
				result.objectsEnd = end
			}
			stack = stack[:len(stack)-1]
		}
	}
	if result.bodyStart < 0 || result.bodyEnd < 0 || len(result.objects) == 0 {
		return nil, fmt.Errorf("not a RetrievePropertiesEx answer with objects")
	}
	return result, nil
}
