#!/usr/bin/env bash
# Installs everything redis-trace needs to build and test on a fresh Debian host
# (the machine kind in ../shared/notes/platform.md). Idempotent: each step checks first.
#
#   - Debian packages: redis-server + redis-tools (test and demo server),
#     nftables/iptables/iproute2 (middlebox tests), python3 (test clients)
#   - musl-tools, mmdebstrap, openssl (the static binary, its tests' roots and certs)
#   - python3-pip, debian-archive-keyring (cargo xtask builds: PyPI wheels, other
#     Debian suites; mmdebstrap makes its trixie root)
#   - qemu-system-x86, busybox-static, kmod (cargo xtask vm-test: Debian's kernels in VMs)
#   - the nightly toolchain's rust-src (the eBPF crate builds `core` itself)
#   - the x86_64-unknown-linux-musl target (cargo xtask dist)
#   - bpf-linker, built against the very LLVM that the nightly rustc ships
#
# Set REDIS_TRACE_SETUP_QUIET=1 to silence the progress lines.
set -euo pipefail

say() { [[ ${REDIS_TRACE_SETUP_QUIET:-0} == 1 ]] || echo "setup: $*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"

# --- Debian packages -------------------------------------------------------------
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v python3 >/dev/null || need_pkgs+=(python3)
# cargo xtask dist: ring's C parts for the static musl build; the tests' roots and certs.
command -v musl-gcc >/dev/null || need_pkgs+=(musl-tools)
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v unshare >/dev/null || need_pkgs+=(util-linux)
# cargo xtask builds: `python3 -m pip download` of pinned wheels, Debian's keys for the
# private sources list of other suites.
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need_pkgs+=(debian-archive-keyring)
# cargo xtask vm-test: QEMU (TCG), a static busybox for the VMs' initramfs, kmod (depmod
# and modprobe for the kernels' modules), dpkg-deb for the kernel packages.
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
command -v depmod >/dev/null || [[ -x /usr/sbin/depmod || -x /sbin/depmod ]] || need_pkgs+=(kmod)
if ((${#need_pkgs[@]})); then
  say "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  # The redis-server package would start its own service on 6379; the project starts its
  # own servers. Rather than stop a service afterwards (which could be a production
  # Redis that was already running), keep the packages from starting any service while
  # they install (Debian's policy-rc.d: exit 101 = "not allowed"), and stop nothing.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# redis-trace setup: no service starts during its package install\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
  fi
  install_ok=0
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null && install_ok=1
  if ((made_policy)); then rm -f "$policy"; fi
  ((install_ok)) || { echo "setup: apt-get install ${need_pkgs[*]} failed" >&2; exit 1; }
fi

# --- nightly toolchain with rust-src ------------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly Rust toolchain (for the eBPF crate)"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  say "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

# --- the static (musl) target for `cargo xtask dist` ---------------------------
if ! rustup target list --installed | grep -q '^x86_64-unknown-linux-musl$'; then
  say "adding the Rust target x86_64-unknown-linux-musl (static binary)"
  rustup target add x86_64-unknown-linux-musl
fi

# --- bpf-linker built against the nightly's LLVM ------------------------------
# bpf-linker links the eBPF object with LLVM; it must be the LLVM that produced the
# bitcode, i.e. the one inside the nightly sysroot. We point LLVM_PREFIX at a small
# directory of symlinks to that library. The directory must outlive the build: the
# binary keeps an rpath to it.
sysroot=$(rustc +nightly --print sysroot)
llvm_lib=$(cd "$sysroot/lib" && ls libLLVM.so.* 2>/dev/null | head -n1 || true)
if [[ -z $llvm_lib ]]; then
  echo "setup: no libLLVM.so.* in $sysroot/lib; cannot build bpf-linker" >&2
  exit 1
fi
llvm_major=$(sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/' <<<"$llvm_lib")
prefix="$HOME/.local/share/redis-trace/llvm-$llvm_lib"
stamp="$prefix/bpf-linker.stamp"
if ! command -v bpf-linker >/dev/null || [[ ! -f $stamp ]]; then
  say "building bpf-linker against $llvm_lib (about 70 s)"
  mkdir -p "$prefix/lib"
  ln -sf "$sysroot/lib/$llvm_lib" "$prefix/lib/$llvm_lib"
  ln -sf "$sysroot/lib/$llvm_lib" "$prefix/lib/libLLVM.so"
  LLVM_PREFIX="$prefix" cargo install --locked bpf-linker --version '^0.13' \
    --no-default-features --features "llvm-$llvm_major" --force
  touch "$stamp"
fi

say "ready: $(redis-server --version | cut -d' ' -f1-3), bpf-linker $(bpf-linker --version 2>/dev/null | head -n1)"
