# shellcheck shell=bash
# A Debian 12 (bookworm) root file system with nothing of the project in it, as a tarball:
# debootstrap --variant=minbase from the host's own apt sources (whatever mirror and proxy it
# is set up with), slimmed the way the official debian:bookworm-slim image is. Sourced by
# tests/compose/run.sh (the base image it imports) and tests/fresh/run.sh (the fresh machine
# it runs `make up` in); both cache the tarball in build/compose/.
#
# rootfs_tarball TARBALL LOG: makes TARBALL unless it exists; debootstrap's output goes to
# LOG. Prints one line of progress; returns non-zero (with the reason on stderr) on failure.

rootfs_tarball() {
  local tarball=$1 log=$2 mirror rootfs t
  [ -s "$tarball" ] && return 0
  command -v debootstrap >/dev/null || { echo "rootfs: debootstrap is not installed" >&2; return 1; }
  # shellcheck disable=SC2016 # $(...) are apt's format fields, not the shell's
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' |
           awk '$2 == "bookworm" {print $1; exit}')
  [ -n "$mirror" ] || { echo "rootfs: no bookworm source in the host's apt configuration" >&2; return 1; }
  rootfs=$tarball.root
  rm -rf --one-file-system "$rootfs"
  mkdir -p "$(dirname "$tarball")"
  echo "rootfs: debootstrap --variant=minbase bookworm from $mirror (log $log)"
  t=$(date +%s)
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null
    rm -rf --one-file-system "$rootfs"
    echo "rootfs: debootstrap failed" >&2
    return 1
  fi
  # apt sources and proxy as on this host
  # shellcheck disable=SC2016
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' |
    awk '$2 ~ /^bookworm(-updates|-security)?$/ {print "deb " $1 " " $2 " main"}' | sort -u \
    >"$rootfs/etc/apt/sources.list"
  apt-config dump | grep -iE '^Acquire::https?::Proxy ' >"$rootfs/etc/apt/apt.conf.d/01proxy" ||
    rm -f "$rootfs/etc/apt/apt.conf.d/01proxy"
  # What the official slim image does: no docs, man pages or translations, no apt caches.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,locale}/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/apt/*.bin
  tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf --one-file-system "$rootfs"
  [ -s "$tarball" ] || { echo "rootfs: could not write $tarball" >&2; return 1; }
  echo "rootfs: debootstrap done in $(($(date +%s) - t)) s: $(du -h "$tarball" | cut -f1) tarball, cached as $tarball"
}
