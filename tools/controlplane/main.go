// Command controlplane runs the upstream Kubernetes components and etcd that the collection's tests
// and lab start, built from their published Go modules (pinned in go.mod): one multi-call binary, so
// the whole set costs one link. Start a component as
//
//	controlplane <component> [flags]
//
// or through a symbolic link named after it. Components: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubectl, and the node's kubelet and kube-proxy.
// `controlplane versions` prints the pins.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	_ "time/tzdata" // CronJob time zones, as the upstream binaries have them

	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var components = map[string]func(args []string) int{
	"etcd": func(args []string) int {
		etcdmain.Main(args) // exits the process itself
		return 0
	},
	"kube-apiserver": func([]string) int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func([]string) int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kube-scheduler": func([]string) int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubectl": func(args []string) int {
		logs.GlogSetter(kubectl.GetLogVerbosity(args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	},
	"kubelet":    func([]string) int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) },
	"kube-proxy": func([]string) int { return cli.Run(proxy.NewProxyCommand()) },
	"versions":   func([]string) int { return versions() },
}

func names() []string {
	out := make([]string, 0, len(components))
	for name := range components {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// versions prints the module versions this binary was built from.
func versions() int {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(os.Stderr, "controlplane: no build information")
		return 1
	}
	wanted := map[string]bool{
		"k8s.io/kubernetes": true, "k8s.io/kubectl": true, "k8s.io/apiserver": true,
		"go.etcd.io/etcd/server/v3": true,
	}
	fmt.Printf("go %s\n", info.GoVersion)
	for _, dep := range info.Deps {
		if wanted[dep.Path] {
			version := dep.Version
			if dep.Replace != nil {
				version = dep.Replace.Version
			}
			fmt.Printf("%s %s\n", dep.Path, version)
		}
	}
	return 0
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if _, ok := components[name]; !ok {
		if len(os.Args) < 2 {
			fmt.Fprintf(os.Stderr, "usage: controlplane <component> [flags]; components: %v\n", names())
			os.Exit(2)
		}
		name, args = os.Args[1], os.Args[1:]
	}
	run, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "controlplane: unknown component %q; components: %v\n", name, names())
		os.Exit(2)
	}
	// Each component parses os.Args itself (cobra, etcd's flags): make it look as if it ran alone.
	os.Args = args
	os.Exit(run(args))
}
