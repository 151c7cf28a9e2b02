"""The bucket sensor and S3 imports against a real S3-protocol server (moto's server mode) on 127.0.0.1."""

from collections.abc import Iterator

import boto3
import dagster as dg
import pytest
from moto.server import ThreadedMotoServer

from import_pipeline.bucket import BucketStore
from import_pipeline.definitions import defs, resolved_import_leads_job
from import_pipeline.history import import_summary
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.sensors import bucket_sensor
from import_pipeline_tests.shared import FILLER, HANDMADE


@pytest.fixture
def s3(monkeypatch) -> Iterator[BucketStore]:
    """A fresh bucket `drops` on a local S3 server, and the environment that points the pipeline at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "IMPORT_PIPELINE_S3_BUCKET": "drops",
        "IMPORT_PIPELINE_S3_ENDPOINT_URL": endpoint,
        "IMPORT_PIPELINE_S3_PREFIX": "in/",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="drops")
    yield BucketStore(bucket="drops", prefix="in/", endpoint_url=endpoint)
    server.stop()


def _tick(pipeline, bucket: BucketStore, cursor: str | None):
    context = dg.build_sensor_context(
        instance=pipeline.instance, cursor=cursor, definitions=defs, resources={"bucket": bucket}
    )
    result = bucket_sensor(context)
    for add in result.dynamic_partitions_requests or []:
        pipeline.instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    return result


def _run_request(pipeline, request: dg.RunRequest) -> dict:
    """Run what the sensor requested, as the daemon would, and summarise the import."""
    with dg.execute_job(
        dg.reconstructable(resolved_import_leads_job),
        instance=pipeline.instance,
        run_config=request.run_config,
        tags={"dagster/partition": request.partition_key},
    ) as result:
        return import_summary(pipeline.instance, result.run_id)


def test_bucket_sensor_pages_caps_and_keys_on_etag(pipeline, s3):
    client = s3.client()
    for i in range(5):
        client.put_object(Bucket="drops", Key=f"in/leads{i}.csv", Body=f"Company,Email\nC{i},c{i}@x.com\n".encode())
    client.put_object(Bucket="drops", Key="in/upload.csv.part", Body=b"partial")
    client.put_object(Bucket="drops", Key="elsewhere/other.csv", Body=b"Company\nX\n")
    capped = s3.model_copy(update={"max_objects_per_tick": 2})

    seen, cursor = [], None
    for _ in range(4):
        result = _tick(pipeline, capped, cursor)
        cursor = result.cursor
        seen += [r.tags["import_pipeline/source_file"] for r in result.run_requests or []]

    assert seen == [f"s3://drops/in/leads{i}.csv" for i in range(5)], "two per tick, in key order, the .part file never"
    assert len(pipeline.instance.get_dynamic_partitions(landed_files_partitions_def.name)) == 5
    client.put_object(Bucket="drops", Key="in/leads0.csv", Body=b"Company,Email\nC0,c0@x.com\n")  # same bytes again
    client.put_object(Bucket="drops", Key="in/leads1.csv", Body=b"Company,Email\nChanged,c1@x.com\n")
    again = _tick(pipeline, s3, "")
    assert [r.tags["import_pipeline/source_file"] for r in again.run_requests] == ["s3://drops/in/leads1.csv"]


def test_bucket_import_streams_the_object_and_records_its_uri(pipeline, s3):
    s3.client().put_object(Bucket="drops", Key="in/handmade.csv", Body=HANDMADE.encode())
    request = _tick(pipeline, s3, None).run_requests[0]

    summary = _run_request(pipeline, request)
    assert summary["status"] == "success", summary["error"]

    assert (summary["inserted"], summary["rows_rejected"]) == (5 + FILLER, 5)
    assert summary["source_file"] == "s3://drops/in/handmade.csv"
    assert pipeline.scalar("SELECT DISTINCT source_file FROM leads") == "s3://drops/in/handmade.csv"
    work = pipeline.home / "dagster" / "storage" / summary["run_id"] / "work"
    assert not work.exists(), "the local copy is removed after parsing"


def test_bucket_import_refuses_an_object_changed_since_listing(pipeline, s3):
    client = s3.client()
    client.put_object(Bucket="drops", Key="in/handmade.csv", Body=HANDMADE.encode())
    request = _tick(pipeline, s3, None).run_requests[0]
    client.put_object(Bucket="drops", Key="in/handmade.csv", Body=HANDMADE.replace("Acme", "Other").encode())

    summary = _run_request(pipeline, request)

    assert summary["status"] == "failed"
    assert "s3://drops/in/handmade.csv#" in summary["error"] and "cannot be read from the bucket" in summary["error"]
    assert "PreconditionFailed" in summary["error"]


def test_bucket_object_under_review_is_approved_without_naming_it_again(pipeline, s3):
    (pipeline.home / "mapping_profiles").mkdir()
    (pipeline.home / "mapping_profiles" / "vendor.toml").write_text(
        'name = "vendor"\nfile_pattern = "*vendor*"\nreview = true\n'
    )
    s3.client().put_object(Bucket="drops", Key="in/vendor_list.csv", Body=b"Company,Email\nAcme,ann@acme.com\n")
    # moto's server keeps the objects of the module's earlier tests: this one is picked by its name.
    (request,) = [
        r
        for r in _tick(pipeline, s3, None).run_requests
        if r.tags["import_pipeline/source_file"].endswith("/vendor_list.csv")
    ]

    planned = _run_request(pipeline, request)
    # Approved from the Launchpad, whose config names no source: the run reads the object the sensor named.
    approved = defs.resolve_job_def("approve_import_job").execute_in_process(
        instance=pipeline.instance, partition_key=request.partition_key, raise_on_error=False
    )

    assert planned["status"] == "awaiting approval"
    summary = import_summary(pipeline.instance, approved.run_id)
    assert (summary["status"], summary["inserted"]) == ("success", 1), summary["error"]
    assert summary["source_file"] == "s3://drops/in/vendor_list.csv"
    assert pipeline.scalar("SELECT email FROM leads") == "ann@acme.com"
