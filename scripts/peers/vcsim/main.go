// Command drkit-vcsim runs govmomi's vCenter simulator (vcsim) for drkit's integration tests, with the
// project's own extensions (see README.md): QueryChangedDiskAreas, paging of RetrievePropertiesEx, a
// read-only user that gets NoPermission faults, and a certificate made fresh at every start.
//
//	drkit-vcsim -mode vpx|esx [-username U -password P] [-readonly-username U -readonly-password P]
//	            [-vms N] [-disk-mib N] [-cbt-page-bytes N] [-rdm]
//
// It listens on 127.0.0.1 on a free port and prints one line of JSON on stdout when it is ready:
// {"url":"https://127.0.0.1:PORT/sdk","mode":"vpx","certificate":"-----BEGIN...","sha256":"AB:CD:...","pid":N}.
// It stops on SIGTERM or SIGINT, removing the simulator's datastore folders (under $TMPDIR).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

type readyLine struct {
	URL         string `json:"url"`
	Mode        string `json:"mode"`
	Certificate string `json:"certificate"`
	SHA256      string `json:"sha256"`
	PID         int    `json:"pid"`
	Username    string `json:"username"`
}

func main() {
	mode := flag.String("mode", "vpx", "vpx (a vCenter with a cluster) or esx (a single ESXi host)")
	username := flag.String("username", "drkit", "the user name Login accepts")
	password := flag.String("password", "vcsim-password", "the password Login accepts")
	readonlyUser := flag.String("readonly-username", "", "a second user whose sessions get NoPermission on every change (empty: none)")
	readonlyPassword := flag.String("readonly-password", "", "the second user's password")
	vms := flag.Int("vms", 2, "virtual machines per host (vpx) or on the host (esx)")
	diskMiB := flag.Int("disk-mib", 0, "capacity of every VM's first disk in MiB (0: the simulator's 1 MiB)")
	rdm := flag.Bool("rdm", false, "give the last VM (by name) a physical-mode RDM disk (vcsim cannot add one: its disk layout code assumes VMDK backings)")
	pageBytes := flag.Int64("cbt-page-bytes", 4<<20, "at most this many bytes of the disk are covered by one QueryChangedDiskAreas answer")
	failRemove := flag.Int("fail-remove-snapshot", 0, "the first N RemoveSnapshot_Task calls answer the TaskInProgress fault, as a vCenter does while another task runs on the VM")
	flag.Parse()

	log.SetPrefix("drkit-vcsim: ")
	log.SetFlags(0)

	var model *simulator.Model
	switch *mode {
	case "vpx":
		model = simulator.VPX()
	case "esx":
		model = simulator.ESX()
	default:
		log.Fatalf("-mode must be vpx or esx, got %q", *mode)
	}
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatalf("creating the model: %v", err)
	}
	defer model.Remove()
	if *diskMiB > 0 {
		resizeFirstDisks(int64(*diskMiB) << 10)
	}
	if *rdm {
		addRawDeviceMapping()
	}

	cert, pemText, fingerprint, err := newCertificate()
	if err != nil {
		log.Fatalf("making a certificate: %v", err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*username, *password)}
	server := model.Service.NewServer()
	defer server.Close()

	ext := newExtensions(server.Config.Handler, extensionOptions{
		username:         *username,
		password:         *password,
		readonlyUsername: *readonlyUser,
		readonlyPassword: *readonlyPassword,
		pageBytes:        *pageBytes,
		failRemove:       *failRemove,
	})
	server.Config.Handler = ext

	u := *server.URL
	u.User = nil
	line, _ := json.Marshal(readyLine{
		URL:         u.String(),
		Mode:        *mode,
		Certificate: pemText,
		SHA256:      fingerprint,
		PID:         os.Getpid(),
		Username:    *username,
	})
	fmt.Println(string(line))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
