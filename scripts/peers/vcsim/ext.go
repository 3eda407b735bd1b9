package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// The session cookie vCenter, ESXi and vcsim set at Login.
const sessionCookie = "vmware_soap_session"

type extensionOptions struct {
	username, password, readonlyUsername, readonlyPassword string
	pageBytes                                              int64
	failRemove                                             int // RemoveSnapshot_Task calls still to refuse
}

// extensions wraps the simulator's HTTP handler. Every request it does not handle itself goes to the simulator
// unchanged; see README.md for what it adds.
type extensions struct {
	inner   http.Handler
	options extensionOptions
	cbt     *changeTracker

	mu        sync.Mutex
	readonly  map[string]bool // session cookie → a session of the read-only user
	pages     map[string]*pendingPages
	nextToken int
}

func newExtensions(inner http.Handler, options extensionOptions) *extensions {
	return &extensions{
		inner:    inner,
		options:  options,
		cbt:      newChangeTracker(options.pageBytes),
		readonly: map[string]bool{},
		pages:    map[string]*pendingPages{},
	}
}

// The privilege a real vCenter checks for the methods the read-only user is refused (vSphere's privilege ids).
var privileges = map[string]string{
	"CreateSnapshot_Task":     "VirtualMachine.State.CreateSnapshot",
	"RemoveSnapshot_Task":     "VirtualMachine.State.RemoveSnapshot",
	"RemoveAllSnapshots_Task": "VirtualMachine.State.RemoveSnapshot",
	"ConsolidateVMDisks_Task": "VirtualMachine.State.RemoveSnapshot",
	"RevertToSnapshot_Task":   "VirtualMachine.State.RevertToSnapshot",
	"ReconfigVM_Task":         "VirtualMachine.Config.ChangeTracking",
	"PowerOnVM_Task":          "VirtualMachine.Interact.PowerOn",
	"PowerOffVM_Task":         "VirtualMachine.Interact.PowerOff",
	"Destroy_Task":            "VirtualMachine.Inventory.Delete",
	"QueryChangedDiskAreas":   "VirtualMachine.Provisioning.DiskRandomRead",
}

func (e *extensions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
		e.inner.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	call, err := parseCall(body)
	if err != nil {
		relay(w, e.forward(r, body))
		return
	}
	session := ""
	if c, err := r.Cookie(sessionCookie); err == nil {
		session = c.Value
	}
	e.mu.Lock()
	readonly := e.readonly[session]
	e.mu.Unlock()

	if privilege, ok := privileges[call.method]; ok && readonly {
		if call.method != "ReconfigVM_Task" || strings.Contains(string(body), "changeTrackingEnabled") {
			writeFault(w, "Permission to perform this operation was denied.", noPermissionFault(call.this, privilege))
			return
		}
	}

	switch call.method {
	case "Login":
		e.login(w, r, call, body)
	case "Logout":
		res := e.forward(r, body)
		e.mu.Lock()
		delete(e.readonly, session)
		e.mu.Unlock()
		relay(w, res)
	case "RetrievePropertiesEx":
		e.retrievePropertiesEx(w, r, call, body)
	case "ContinueRetrievePropertiesEx", "CancelRetrievePropertiesEx":
		e.continueRetrievePropertiesEx(w, r, call)
	case "QueryChangedDiskAreas":
		if fault := e.checkSession(r); fault != nil {
			relay(w, fault)
			return
		}
		e.cbt.query(w, call)
	case "CreateSnapshot_Task":
		res := e.forward(r, body)
		if res.Code == http.StatusOK {
			if task, ok := returnval(res.Body.Bytes()); ok {
				e.cbt.snapshotTaken(task)
			}
		}
		relay(w, res)
	case "ReconfigVM_Task":
		res := e.forward(r, body)
		if res.Code == http.StatusOK {
			e.cbt.reconfigured(call.this)
		}
		relay(w, res)
	case "RemoveSnapshot_Task":
		if e.refuseRemove() {
			writeFault(w, "The operation is not allowed in the current state: another task is in progress.",
				faultObject("TaskInProgress", refElement("task", types.ManagedObjectReference{Type: "Task", Value: "task-busy"})))
			return
		}
		res := e.forward(r, body)
		if res.Code == http.StatusOK {
			e.cbt.snapshotRemoved(call.this)
		}
		relay(w, res)
	default:
		relay(w, e.forward(r, body))
	}
}

// refuseRemove counts down -fail-remove-snapshot: true while RemoveSnapshot_Task calls are still to be refused.
func (e *extensions) refuseRemove() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.options.failRemove <= 0 {
		return false
	}
	e.options.failRemove--
	return true
}

// login accepts the read-only user too: the simulator knows one user, so its Login is sent on as the main user
// and the session is remembered as read-only.
func (e *extensions) login(w http.ResponseWriter, r *http.Request, call *soapCall, body []byte) {
	user, password := call.text("userName"), call.text("password")
	if e.options.readonlyUsername == "" || user != e.options.readonlyUsername || password != e.options.readonlyPassword {
		relay(w, e.forward(r, body))
		return
	}
	rewritten := envelope(fmt.Sprintf(
		`<Login xmlns="urn:vim25"><_this type="SessionManager">%s</_this><userName>%s</userName><password>%s</password></Login>`,
		xmlText(call.this.Value), xmlText(e.options.username), xmlText(e.options.password)))
	res := e.forward(r, rewritten)
	if res.Code == http.StatusOK {
		for _, c := range (&http.Response{Header: res.Header()}).Cookies() {
			if c.Name == sessionCookie {
				e.mu.Lock()
				e.readonly[c.Value] = true
				e.mu.Unlock()
			}
		}
		patched := bytes.ReplaceAll(res.Body.Bytes(),
			[]byte("<userName>"+xmlText(e.options.username)+"</userName>"),
			[]byte("<userName>"+xmlText(user)+"</userName>"))
		patched = bytes.ReplaceAll(patched,
			[]byte("<fullName>"+xmlText(e.options.username)+"</fullName>"),
			[]byte("<fullName>"+xmlText(user)+"</fullName>"))
		res.Body = bytes.NewBuffer(patched)
	}
	relay(w, res)
}

// checkSession asks the simulator for CurrentTime with the request's cookies: it answers NotAuthenticated
// without a valid session. Returns that answer, or nil when the session is valid.
func (e *extensions) checkSession(r *http.Request) *httptest.ResponseRecorder {
	res := e.forward(r, envelope(`<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>`))
	if res.Code == http.StatusOK {
		return nil
	}
	return res
}

func (e *extensions) forward(r *http.Request, body []byte) *httptest.ResponseRecorder {
	inner := r.Clone(r.Context())
	inner.Body = io.NopCloser(bytes.NewReader(body))
	inner.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	e.inner.ServeHTTP(rec, inner)
	return rec
}

func relay(w http.ResponseWriter, res *httptest.ResponseRecorder) {
	for name, values := range res.Header() {
		if name == "Content-Length" {
			continue
		}
		for _, v := range values {
			w.Header().Add(name, v)
		}
	}
	w.WriteHeader(res.Code)
	_, _ = w.Write(res.Body.Bytes())
}

// soapCall is the method of a SOAP request and its arguments, as element paths below the method element
// ("deviceKey", "options/maxObjects") with their text and `type` attribute; the first occurrence of each.
type soapCall struct {
	method string
	this   types.ManagedObjectReference
	args   map[string]soapValue
}

type soapValue struct{ text, typ string }

func (c *soapCall) text(path string) string { return c.args[path].text }

func (c *soapCall) ref(path string) (types.ManagedObjectReference, bool) {
	v, ok := c.args[path]
	if !ok || v.text == "" {
		return types.ManagedObjectReference{}, false
	}
	return types.ManagedObjectReference{Type: v.typ, Value: v.text}, true
}

const envelopeNS = "http://schemas.xmlsoap.org/soap/envelope/"

func parseCall(body []byte) (*soapCall, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	var stack []string
	var texts []*strings.Builder
	call := &soapCall{args: map[string]soapValue{}}
	methodDepth := -1
	for {
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
			texts = append(texts, &strings.Builder{})
			depth := len(stack) - 1
			if methodDepth < 0 && depth == 2 && stack[0] == "Envelope" && stack[1] == "Body" && t.Name.Space != envelopeNS {
				call.method = t.Name.Local
				methodDepth = depth
			}
			if methodDepth >= 0 && depth > methodDepth {
				path := strings.Join(stack[methodDepth+1:], "/")
				if _, seen := call.args[path]; !seen {
					v := soapValue{}
					for _, a := range t.Attr {
						if a.Name.Local == "type" {
							v.typ = a.Value
						}
					}
					call.args[path] = v
				}
			}
		case xml.CharData:
			if len(texts) > 0 {
				texts[len(texts)-1].Write(t)
			}
		case xml.EndElement:
			depth := len(stack) - 1
			if methodDepth >= 0 && depth > methodDepth {
				path := strings.Join(stack[methodDepth+1:], "/")
				v := call.args[path]
				if v.text == "" {
					v.text = strings.TrimSpace(texts[depth].String())
					call.args[path] = v
				}
			}
			if depth == methodDepth {
				methodDepth = -2 // done: ignore anything after the method element
			}
			stack = stack[:depth]
			texts = texts[:depth]
		}
	}
	if call.method == "" {
		return nil, fmt.Errorf("no method element in the SOAP body")
	}
	if v, ok := call.args["_this"]; ok {
		call.this = types.ManagedObjectReference{Type: v.typ, Value: v.text}
	}
	return call, nil
}

// returnval reads the ManagedObjectReference a method returned (a task).
func returnval(body []byte) (types.ManagedObjectReference, bool) {
	d := xml.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := d.Token()
		if err != nil {
			return types.ManagedObjectReference{}, false
		}
		if start, ok := tok.(xml.StartElement); ok && start.Name.Local == "returnval" {
			ref := types.ManagedObjectReference{}
			for _, a := range start.Attr {
				if a.Name.Local == "type" {
					ref.Type = a.Value
				}
			}
			var text string
			if err := d.DecodeElement(&text, &start); err != nil {
				return ref, false
			}
			ref.Value = strings.TrimSpace(text)
			return ref, true
		}
	}
}

func xmlText(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// The envelope the simulator writes, so that answers the extensions write look like its own.
const envelopeStart = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const envelopeEnd = `</soapenv:Body></soapenv:Envelope>`

func envelope(content string) []byte {
	return []byte(envelopeStart + content + envelopeEnd)
}

func writeResponse(w http.ResponseWriter, content string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(envelope(content))
}

// writeFault writes a SOAP fault the way vSphere does: HTTP 500, faultstring, and the fault object in <detail>.
func writeFault(w http.ResponseWriter, message, detail string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(envelope(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>` + xmlText(message) +
		`</faultstring><detail>` + detail + `</detail></soapenv:Fault>`))
}

func faultObject(kind, fields string) string {
	return `<` + kind + `Fault xmlns="urn:vim25" xsi:type="` + kind + `">` + fields + `</` + kind + `Fault>`
}

func refElement(name string, ref types.ManagedObjectReference) string {
	return `<` + name + ` type="` + xmlText(ref.Type) + `">` + xmlText(ref.Value) + `</` + name + `>`
}

func noPermissionFault(object types.ManagedObjectReference, privilege string) string {
	return faultObject("NoPermission", refElement("object", object)+`<privilegeId>`+xmlText(privilege)+`</privilegeId>`)
}

func invalidArgumentFault(property string) string {
	return faultObject("InvalidArgument", `<invalidProperty>`+xmlText(property)+`</invalidProperty>`)
}

func managedObjectNotFoundFault(ref types.ManagedObjectReference) string {
	return faultObject("ManagedObjectNotFound", refElement("obj", ref))
}

func fileFault(file string) string {
	return faultObject("FileFault", `<file>`+xmlText(file)+`</file>`)
}

func parseInt(s string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n, err == nil
}

// resizeFirstDisks sets the capacity of every VM's disks (capacityInKB only, as the simulator reports it).
func resizeFirstDisks(kb int64) {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm, ok := entity.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			for _, device := range vm.Config.Hardware.Device {
				if disk, ok := device.(*types.VirtualDisk); ok {
					disk.CapacityInKB = kb
				}
			}
		})
	}
}

// addRawDeviceMapping gives the last VM (by name) a physical-mode RDM disk, straight in the model: vcsim's
// ReconfigVM_Task panics on one (its disk layout code assumes VMDK backings), so it cannot be added through the
// API. Only for inventory: a snapshot or reconfiguration of that VM would hit the same code.
func addRawDeviceMapping() {
	var last *simulator.VirtualMachine
	for _, entity := range simulator.Map.All("VirtualMachine") {
		if vm, ok := entity.(*simulator.VirtualMachine); ok && (last == nil || vm.Name > last.Name) {
			last = vm
		}
	}
	if last == nil {
		return
	}
	simulator.Map.WithLock(last, func() {
		var controller int32
		var datastore *types.ManagedObjectReference
		for _, device := range last.Config.Hardware.Device {
			if disk, ok := device.(*types.VirtualDisk); ok {
				controller = disk.ControllerKey
				if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					datastore = b.Datastore
				}
			}
		}
		unit := int32(7)
		last.Config.Hardware.Device = append(last.Config.Hardware.Device, &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           2099,
				DeviceInfo:    &types.Description{Label: "Hard disk 99", Summary: "RDM"},
				ControllerKey: controller,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskRawDiskMappingVer1BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName:  "[LocalDS_0] " + last.Name + "/rdm-disk.vmdk",
						Datastore: datastore,
					},
					LunUuid:           "0200000000600000000000000000000001",
					DeviceName:        "/vmfs/devices/disks/naa.600000000000000000000001",
					CompatibilityMode: "physicalMode",
					DiskMode:          "independent_persistent",
				},
			},
			CapacityInKB: 1024,
		})
	})
}
