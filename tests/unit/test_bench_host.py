"""What the benchmarks record about the CPU (bench/host.py)."""

from __future__ import annotations

from bench.host import cpu_description, cpu_line, package_versions

# /proc/cpuinfo of one of our VMs (abridged): the name alone does not tell its host generation apart.
TWO_PROCESSORS = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: Other
stepping\t: 0
"""


def test_the_first_processor_is_described_by_name_family_model_and_stepping() -> None:
    cpu = cpu_description(TWO_PROCESSORS)
    assert cpu == {"family": "26", "model": "2", "name": "AMD EPYC", "stepping": "1"}
    assert cpu_line(cpu) == "AMD EPYC (family 26, model 2, stepping 1)"


def test_a_machine_without_cpuinfo_is_unknown() -> None:
    assert cpu_description("") == {"name": "unknown"}
    assert cpu_line(cpu_description("")) == "unknown"


def test_a_cpuinfo_without_a_model_name_still_names_the_cpu() -> None:
    # ARM kernels list "CPU implementer", "CPU part" and so on, but no "model name".
    cpu = cpu_description("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")
    assert cpu == {"name": "unknown"}
    assert cpu_description("model\t\t: 17\n") == {"name": "unknown", "model": "17"}


def test_package_versions_name_what_is_installed_and_none_for_what_is_not() -> None:
    from importlib import metadata

    versions = package_versions(["numpy", "no-such-package-mnist-platform"])
    assert versions == {"numpy": metadata.version("numpy"), "no-such-package-mnist-platform": None}
