// Package version reports the nodeq version of the running binary.
package version

import "runtime/debug"

// Base is the version of this source tree; a release build may override it
// with -ldflags "-X github.com/nodeq/nodeq/internal/version.Base=v1.2.3".
var Base = "0.1.0-dev"

// String returns Base, followed by the VCS revision when the build recorded one.
func String() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Base
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return Base + "+" + s.Value[:12]
		}
	}
	return Base
}
