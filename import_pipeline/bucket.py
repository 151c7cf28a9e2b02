"""The S3-compatible bucket that lead files are dropped into."""

from pathlib import Path

import dagster as dg


class BucketStore(dg.ConfigurableResource):
    """An S3-compatible bucket that lead files are dropped into (AWS S3, MinIO, ...)."""

    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    # Keeps a sensor tick well under Dagster's 60-second limit on large buckets.
    max_objects_per_tick: int = 500

    def client(self):
        import boto3

        credentials = (
            {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}
            if self.access_key_id
            else {}
        )
        return boto3.client("s3", endpoint_url=self.endpoint_url or None, region_name=self.region, **credentials)

    def list_page(self, start_after: str, limit: int) -> list[dict]:
        """Up to `limit` objects under the prefix whose keys sort after `start_after`."""
        page = self.client().list_objects_v2(
            Bucket=self.bucket, Prefix=self.prefix, StartAfter=start_after or self.prefix, MaxKeys=limit
        )
        return page.get("Contents", [])

    def holds(self, uri: str) -> bool:
        """Whether `s3://bucket/key[#etag]` names an object of this bucket, under its prefix."""
        bucket, _, key = uri.removeprefix("s3://").partition("#")[0].partition("/")
        return (
            bool(self.bucket) and bucket == self.bucket and key.startswith(self.prefix) and ".." not in key.split("/")
        )

    def location(self) -> str:
        """The bucket and prefix as a URI, for messages."""
        return f"s3://{self.bucket}/{self.prefix}" if self.bucket else "no bucket (IMPORT_PIPELINE_S3_BUCKET is unset)"

    def download(self, uri: str, target_dir: Path, max_bytes: int) -> Path:
        """Stream `s3://bucket/key#etag` to `target_dir`, refusing a changed object or one above `max_bytes`."""
        location, _, etag = uri.removeprefix("s3://").partition("#")
        bucket, _, key = location.partition("/")
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / Path(key).name
        try:
            response = self.client().get_object(Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))
        except Exception as e:  # botocore raises one ClientError class for every S3 error code
            raise dg.Failure(description=f"{uri}: cannot be read from the bucket: {e}") from e
        if response["ContentLength"] > max_bytes:
            raise dg.Failure(
                description=f"{key}: the object is {response['ContentLength']} bytes, above the size limit"
            )
        with target.open("wb") as f:
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                f.write(chunk)
        return target
