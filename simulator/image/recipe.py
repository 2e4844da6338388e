"""What goes into a simulator image: packages, wheels, kernel modules, the guest's init. Pure.

The image is an ARM64 initramfs that a Raspberry-Pi-class device with Debian bookworm would run:
Debian's arm64 kernel, busybox, CPython 3.11 with its standard library, the TPM software stack
and edgeward's device code with its dependencies as aarch64 wheels. Everything comes from package
registries (Debian's archive through ``apt-get download``, PyPI through ``pip download``).

Choices, each for a reason:

* kernel: ``linux-image-cloud-arm64``, not ``linux-image-arm64``. The generic arm64 flavour
  builds without ``CONFIG_TCG_TIS`` (no MMIO TPM TIS driver, only SPI and I2C ones), so it cannot
  see QEMU's ``tpm-tis-device``; the cloud flavour, made for virtual machines, has it as a module
  and is a third of the size.
* TFLite runtime: ``ai-edge-litert`` 1.4.0, the newest release with an aarch64 Linux wheel for
  CPython 3.11 (the 2.x releases on the x86 host publish none).
* tpm2-pytss: no aarch64 wheel exists, so Debian's ``python3-tpm2-pytss`` (1.2.0) is used with
  its ``libtss2-*`` libraries; :data:`TPM2_COMPAT` fills in the one call edgeward makes that
  1.2.0 lacks. ``libtss2-fapi`` links libcurl, hence the curl libraries in :data:`DEBS`.

This module only holds data and computes the cache key; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

RECIPE_VERSION = "1"
KERNEL_META = "linux-image-cloud-arm64"
ARCH = "arm64"

# Debian arm64 packages (``:all`` for architecture-independent ones), extracted with ``dpkg-deb
# -x``. No dependency resolution at build time: the list is the closure (checked against every
# ELF's DT_NEEDED when the image is built).
DEBS: tuple[str, ...] = (
    "busybox-static",
    # C and C++ runtime
    "libc6", "libgcc-s1", "libstdc++6",
    # CPython 3.11 and the libraries its standard library loads
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libssl3", "libexpat1", "zlib1g", "libffi8", "libsqlite3-0", "libbz2-1.0", "liblzma5",
    "libuuid1", "libcrypt1",
    # TPM software stack and Debian's Python binding
    "python3-tpm2-pytss", "python3-asn1crypto:all", "python3-packaging:all", "python3-yaml",
    "libyaml-0-2", "libtss2-esys-3.0.2-0", "libtss2-mu0", "libtss2-rc0", "libtss2-sys1",
    "libtss2-tctildr0", "libtss2-tcti-device0", "libtss2-fapi1", "libjson-c5",
    # libtss2-fapi -> libcurl and what it links
    "libcurl4", "libbrotli1", "libcom-err2", "libgmp10", "libgnutls30", "libgssapi-krb5-2",
    "libhogweed6", "libidn2-0", "libk5crypto3", "libkeyutils1", "libkrb5-3", "libkrb5support0",
    "libldap-2.5-0", "libnettle8", "libnghttp2-14", "libp11-kit0", "libpsl5", "librtmp1",
    "libsasl2-2", "libssh2-1", "libtasn1-6", "libunistring2", "libzstd1",
)

# aarch64 wheels for CPython 3.11, pinned so the cache key is stable: the versions of
# requirements/device.txt, except ai-edge-litert (no aarch64 wheel after 1.4.0) and tpm2-pytss.
WHEELS: tuple[str, ...] = (
    "cryptography==50.0.2",
    "cffi==2.1.1",
    "cbor2==5.9.0",  # 6.x decodes CBOR arrays as tuples, which edgeward's COSE code refuses
    "paho-mqtt==2.2.0",
    "psutil==7.2.2",
    "click==8.5.1",
    "numpy==2.4.6",
    "flatbuffers==25.12.19",
    "ai-edge-litert==1.4.0",
    "backports-strenum==1.2.8",  # ai-edge-litert's own dependencies
    "typing-extensions==4.16.0",
    "tqdm==4.70.1",
    "pyserial==3.5",  # the gateway's serial line to a lock's microcontroller
)
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
PYTHON_VERSION = "3.11"

# Kernel modules the guest loads (by name); the builder adds what they depend on, from each
# module's ``depends=`` field, and writes the load order into the image. Nothing else is kept.
MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_net", "virtio_console", "virtio-rng", "qemu_fw_cfg", "tpm_tis",
)
MODULE_ORDER_FILE = "lib/modules/load-order"

# Parts of the staged tree that a device never uses (documentation, tests, tools).
PRUNE: tuple[str, ...] = (
    "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian",
    "usr/share/bug", "usr/share/gcc", "usr/share/gdb", "usr/share/info", "usr/share/menu",
    "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib", "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/ensurepip", "usr/lib/python3.11/lib2to3", "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/pydoc_data", "usr/lib/python3.11/config-3.11-aarch64-linux-gnu",
    "etc", "boot", "usr/lib/linux",
)
PRUNE_GLOBS: tuple[str, ...] = (
    "**/tests", "**/__pycache__", "**/*.pyi",
    # standard-library extensions for a terminal or old databases, and their libraries
    "usr/lib/python3.11/lib-dynload/_curses*", "usr/lib/python3.11/lib-dynload/_dbm*",
    "usr/lib/python3.11/lib-dynload/nis.*", "usr/lib/python3.11/lib-dynload/readline.*",
)

# The simulator's tools that scenarios run inside a device (``python3 -m
# edgeward.simulator.ondevice ...``), copied into the image when they exist.
GUEST_TOOLS: tuple[str, ...] = ("__init__.py", "ondevice.py")
# Folders the agent's code measurement leaves out (attestation.measure.DEVICE_CODE) that a
# device still runs: the gateway's serial link imports the lock's frame codec
# (firmware_shim/mcu/frame.py), so a gateway with a lock needs it in the image.
GUEST_ALSO: tuple[tuple[str, str], ...] = (("firmware_shim", "mcu"),)

# Where things live in the guest.
GUEST_SITE = "/opt/edgeward/lib"  # edgeward's device code and the wheels
GUEST_CONFIG = "/etc/edgeward"  # the config drive's contents
FW_CFG_NAME = "opt/edgeward/config"  # QEMU -fw_cfg name of the config drive (a tar)
BROKER_ADDR = "10.0.2.100"  # the host's broker as the guest sees it (a guestfwd)
GUEST_ADDR = "10.0.2.15"

# Source patches to Debian's tpm2-pytss 1.2.0 (path under dist-packages, exact old text, new
# text); the build fails if a text is not found, so a new Debian release is noticed.
# 1.2.0 subclasses cryptography's RSAPrivateNumbers, a Rust type that cannot be subclassed since
# cryptography 42 (the class serves only to import RSA private keys, which edgeward never does).
TPM2_PATCHES: tuple[tuple[str, str, str], ...] = (
    ("tpm2_pytss/internal/crypto.py",
     "class _MyRSAPrivateNumbers(rsa.RSAPrivateNumbers):\n"
     "    def __init__(self, p: int, n: int, e: int, pubnums: rsa.RSAPublicNumbers):",
     "class _MyRSAPrivateNumbers:  # edgeward: a factory, see simulator/image/recipe.py\n"
     "    def __new__(cls, p: int, n: int, e: int, pubnums: rsa.RSAPublicNumbers):"),
    ("tpm2_pytss/internal/crypto.py",
     "        super().__init__(p, q, d, dmp1, dmq1, iqmp, pubnums)",
     "        return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, pubnums)"),
)

# Appended to tpm2_pytss/TCTILdr.py: 1.2.0 has no TCTILdr.parse, which edgeward's TPM edge calls.
TPM2_COMPAT = '''\
"""Compatibility of Debian bookworm's tpm2-pytss 1.2.0 with the API edgeward uses (2.x)."""
try:
    from tpm2_pytss.TCTILdr import TCTILdr

    if not hasattr(TCTILdr, "parse"):
        def _parse(cls, tcti):
            name, _, conf = tcti.partition(":")
            return cls(name, conf or None)

        TCTILdr.parse = classmethod(_parse)
except Exception:  # the agent reports a missing or broken TPM stack itself
    pass
'''

INIT = r"""#!/bin/busybox sh
# edgeward simulator guest: bring the device up, then run the agent as on a device.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/log
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root LANG=C.UTF-8 PYTHONPATH=@SITE@ PYTHONDONTWRITEBYTECODE=1
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu
mkdir -p /root /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
echo "edgeward-sim: kernel up at $(cut -d' ' -f1 /proc/uptime) s"
for m in $(cat /@ORDER@); do insmod "/lib/modules/$m" || echo "edgeward-sim: $m did not load"; done
hostname edgeward-sim
ip link set lo up
ip link set eth0 up && ip addr add @GUEST@/24 dev eth0 && ip route add default via 10.0.2.2
echo "@BROKER@ broker.sim" >> /etc/hosts
CFG=/sys/firmware/qemu_fw_cfg/by_name/@FWCFG@/raw
mkdir -p @CONFIG@
if [ -r "$CFG" ]; then tar -xf "$CFG" -C @CONFIG@; else echo "edgeward-sim: no config drive"; fi
# the host's command line (QemuDevice.run): a non-interactive shell on the second console
# (stderr a pipe, so busybox sh is not interactive: no prompt, no line editing, no echo)
[ -e /dev/hvc0 ] && setsid sh -c 'exec 3<>/dev/hvc0; stty -echo -onlcr <&3; sh <&3 2>&1 | cat >&3' &
up=$(cut -d' ' -f1 /proc/uptime)
echo "edgeward-sim: network and config up at $up s; tpm: $(ls /dev/tpmrm0 2>&1)"
if [ -x @CONFIG@/start ]; then cd @CONFIG@ && ./start; fi
cd @CONFIG@ 2>/dev/null || cd /
while true; do
  if [ -f @CONFIG@/agent.toml ]; then
    echo "edgeward-sim: starting the agent at $(cut -d' ' -f1 /proc/uptime) s"
    edgeward -v agent run --config @CONFIG@/agent.toml
    echo "edgeward-sim: agent exited with $?"
  fi
  sleep 5
done
"""

EDGEWARD_WRAPPER = """#!/bin/sh
exec /usr/bin/python3.11 -c 'import sys; from edgeward.agent.cli import main; sys.exit(main())' "$@"
"""


def init_script() -> str:
    """The guest's /init with the recipe's paths and modules filled in."""
    return (INIT.replace("@SITE@", GUEST_SITE)
            .replace("@ORDER@", MODULE_ORDER_FILE)
            .replace("@GUEST@", GUEST_ADDR)
            .replace("@BROKER@", BROKER_ADDR)
            .replace("@FWCFG@", FW_CFG_NAME)
            .replace("@CONFIG@", GUEST_CONFIG))


def image_key(*, debs: Mapping[str, str], code_digest: bytes,
              builder_digest: bytes, extra: Iterable[str] = ()) -> str:
    """The cache key: a digest over every input that changes the image's bytes.

    ``debs`` maps each Debian package (and the kernel's meta package, whose version moves with
    the kernel's) to the version that would be downloaded; ``code_digest`` covers edgeward's
    device code; ``builder_digest`` this builder's own code (so a change to the recipe or the
    assembly makes a new image).
    """
    doc = {
        "recipe": RECIPE_VERSION,
        "debs": dict(sorted(debs.items())),
        "wheels": list(WHEELS),
        "platforms": list(WHEEL_PLATFORMS),
        "modules": list(MODULES),
        "init": init_script(),
        "compat": TPM2_COMPAT,
        "patches": [list(p) for p in TPM2_PATCHES],
        "code": code_digest.hex(),
        "builder": builder_digest.hex(),
        "extra": sorted(extra),
    }
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canon).hexdigest()[:20]
