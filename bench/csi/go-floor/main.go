// csi-floor-go: a CSI controller that does nothing, on the CSI spec's Go bindings and grpc-go (the
// stack kubernetes-csi drivers such as csi-driver-host-path use). bench/csi measures it next to
// famfs-csi in the same run: what the reference stack costs per call, with no storage behind it.
//
//	csi-floor-go unix:///path/to/socket
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "floor.csi.local", VendorVersion: "0"}, nil
}

func (identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// controller keeps the names it was asked for, so CreateVolume is idempotent as the spec wants.
type controller struct {
	csi.UnimplementedControllerServer
	mu      sync.Mutex
	volumes map[string]int64
}

func (c *controller) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	size := req.GetCapacityRange().GetRequiredBytes()
	c.mu.Lock()
	c.volumes[req.GetName()] = size
	c.mu.Unlock()
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: "floor-" + req.GetName(), CapacityBytes: size}}, nil
}

func (c *controller) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	c.mu.Lock()
	delete(c.volumes, strings.TrimPrefix(req.GetVolumeId(), "floor-"))
	c.mu.Unlock()
	return &csi.DeleteVolumeResponse{}, nil
}

func main() {
	if len(os.Args) != 2 || !strings.HasPrefix(os.Args[1], "unix://") {
		fmt.Fprintln(os.Stderr, "usage: csi-floor-go unix:///path/to/socket")
		os.Exit(2)
	}
	path := strings.TrimPrefix(os.Args[1], "unix://")
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	csi.RegisterIdentityServer(s, identity{})
	csi.RegisterControllerServer(s, &controller{volumes: map[string]int64{}})
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		s.Stop()
	}()
	if err := s.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
