"""The production topology on more than one host (issue 28): `emopres serve` and `emopres worker` each in a network
namespace of its own (`ip netns`, linked to this host by a veth pair), each with its own data folder (no folder
shared between them), PostgreSQL, Redis and the S3 server (moto) reachable from them only over those links (TCP
forwarders on this host's end of each link; the namespaces' own 127.0.0.1 has none of them). A job submitted to
the API host comes back with every pair done, its audio read by the worker host from the bucket.

Needs root (CAP_NET_ADMIN) for `ip netns`; skipped, saying why, where namespaces are not allowed.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.robustness.fault_injectors import PostgresProxy as TcpProxy
from tests.service_support import (
    ServiceProcess,
    service_env,
    upload_fields,
    wait_http,
    wait_job,
    write_dataset,
)

pytestmark = pytest.mark.services

API_PORT = 8000  # in the API's namespace: nothing else listens there


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Host:
    """A network namespace linked to this host: `address` is its end of the link, `gateway` this host's end."""

    name: str
    address: str
    gateway: str
    forwarders: list[TcpProxy] = field(default_factory=list)

    def forward(self, upstream: tuple[str, int]) -> tuple[str, int]:
        """A forwarder on this host's end of the link to `upstream` (a service on this host's loopback)."""
        proxy = TcpProxy(upstream=upstream, listen=(self.gateway, 0))
        self.forwarders.append(proxy)
        return self.gateway, proxy.port

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *command], capture_output=True, text=True, timeout=60)


class HostProcess(ServiceProcess):
    """`emopres <args>` inside a namespace."""

    def __init__(self, host: Host, args: list[str], env: dict, log: Path) -> None:
        super().__init__(args, env, log)
        self.host = host

    def start(self) -> HostProcess:
        from tests.service_support import EMOPRES, REPO

        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.name, str(EMOPRES), *self.args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        return self


def link_hosts(tag: str, names: list[str]) -> list[Host]:
    """A namespace per name, each linked to this host by a veth pair on a /30 of its own (10.x.y.0/30 chosen at
    random: concurrent runs do not collide)."""
    second = random.randrange(64, 250)
    hosts = []
    for i, name in enumerate(names):
        third = random.randrange(0, 250)
        net = f"10.{second}.{third}"
        host = Host(f"emopres-{tag}-{name}", f"{net}.2", f"{net}.1")
        outside, inside = f"ve{tag}{i}o", f"ve{tag}{i}i"  # interface names: at most 15 characters
        hosts.append(host)
        ip("netns", "add", host.name)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.name)
        ip("addr", "add", f"{host.gateway}/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("-n", host.name, "addr", "add", f"{host.address}/30", "dev", inside)
        ip("-n", host.name, "link", "set", inside, "up")
        ip("-n", host.name, "link", "set", "lo", "up")
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:
        for proxy in host.forwarders:
            proxy.close()
        ip("netns", "del", host.name, check=False)  # its end of the veth pair goes with it, and so the other end


def namespaces_allowed() -> str | None:
    """None when `ip netns` works here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"emopres-probe-{os.getpid()}"
    added = ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"network namespaces are not allowed here (`ip netns add`: {added.stderr.strip()})"
    ip("netns", "del", probe, check=False)
    return None


@pytest.fixture
def hosts():
    reason = namespaces_allowed()
    if reason:
        pytest.skip(reason)
    made = []
    try:
        made = link_hosts(uuid.uuid4().hex[:6], ["api", "worker"])
        yield made
    finally:
        remove_hosts(made)


def test_api_and_worker_on_separate_hosts_share_no_folder(
    hosts, postgres_url, redis_url, s3_server, s3_bucket, random_lite_head, tmp_path
):
    api_host, worker_host = hosts
    schema = f"emopres_multi_host_{os.getpid()}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    queue = f"emopres-multi-host-{uuid.uuid4().hex[:8]}"
    pg, redis_db = ("127.0.0.1", 5432), int(redis_url.rsplit("/", 1)[1])
    processes: list[HostProcess] = []
    try:
        envs = {}
        for host in hosts:
            pg_link, redis_link, s3_link = (
                host.forward(pg),
                host.forward(("127.0.0.1", 6379)),
                host.forward((s3_server.host, s3_server.port)),
            )
            envs[host.name] = service_env(
                database_url=f"postgresql+psycopg://postgres@{pg_link[0]}:{pg_link[1]}/test"
                f"?options=-csearch_path%3D{schema}",
                broker_url=f"redis://{redis_link[0]}:{redis_link[1]}/{redis_db}",
                data_dir=tmp_path / host.name,  # each host its own folder: nothing shared
                head=random_lite_head,
                bootstrap=50,
                chunk_size=1,
                queue=queue,
                auth_disabled=1,
                auto_migrate=int(host is api_host),
                **{**s3_bucket, "s3_endpoint_url": f"http://{s3_link[0]}:{s3_link[1]}"},
            )
        unreachable = worker_host.run(
            "python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 5432), 2)"
        )
        assert unreachable.returncode != 0 and "refused" in unreachable.stderr  # the host's own loopback has none
        api = HostProcess(
            api_host,
            ["serve", "--host", api_host.address, "--port", str(API_PORT)],
            envs[api_host.name],
            tmp_path / "api.log",
        ).start()
        processes.append(api)
        url = f"http://{api_host.address}:{API_PORT}"
        wait_http(f"{url}/healthz", api, timeout=120)  # migrated the schema first
        processes.append(HostProcess(worker_host, ["worker"], envs[worker_host.name], tmp_path / "worker.log").start())
        manifest = write_dataset(tmp_path / "in", n_pairs=2, seconds=0.8)
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            response = client.post("/v1/jobs", files=upload_fields(manifest))
            assert response.status_code == 202, response.text
            job = wait_job(client, response.json()["id"], timeout=240)
            assert job["status"] == "succeeded", (job, processes[1].tail())
            assert job["progress"] == {"done": 2, "total": 2, "failed": 0}
            report = client.get(f"/v1/jobs/{job['id']}/report").json()
            assert sorted(row["pair_id"] for row in report["pairs"]) == ["p0", "p1"] and not report["failures"]
            ready = client.get("/readyz").json()
            assert ready["status"] == "ok" and ready["checks"]["blob_store"]["kind"] == "s3", ready
        api_files = {p.name for p in (tmp_path / api_host.name).rglob("*") if p.is_file()}
        worker_copies = list((tmp_path / worker_host.name / "features" / "blobs").rglob("*"))
        assert not any(name in api_files for name in (p.name for p in worker_copies))
        assert len([p for p in worker_copies if p.is_file()]) == 4  # fetched from the bucket by the worker
        assert len(s3_server.client().list_objects_v2(Bucket=s3_bucket["s3_bucket"])["Contents"]) == 4
    finally:
        for process in processes:
            process.stop()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
        import redis

        broker = redis.Redis.from_url(redis_url)
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)
        broker.close()
