import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { StorageError } from '../errors.js';
import { assertSafeKey, type ImageStore, type StoredObject } from './image-store.js';

export interface S3StoreOptions {
  endpoint: string | undefined;
  region: string;
  bucket: string;
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  forcePathStyle: boolean;
  createBucket: boolean;
  presignTtlS: number;
}

/** S3-compatible storage (AWS S3, MinIO, R2, …) through the AWS SDK v3. */
export class S3ImageStore implements ImageStore {
  readonly kind = 's3';
  private readonly client: S3Client;
  private bucketReady: Promise<void> | undefined;

  constructor(private readonly options: S3StoreOptions) {
    const config: S3ClientConfig = {
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      // Non-AWS servers reject or mishandle the SDK's default CRC32 checksums on every request.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
      // A server that accepts the connection and never answers must fail the request, not hang the
      // worker: the upload is retried by the worker (STORAGE_UPLOAD_RETRY_S), readiness reports it.
      requestHandler: { connectionTimeout: 5000, requestTimeout: 30_000 },
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.accessKeyId && options.secretAccessKey) {
      config.credentials = { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey };
    }
    this.client = new S3Client(config);
  }

  /** Creates the bucket once when configured to; concurrent callers share the attempt. */
  private ensureBucket(): Promise<void> {
    if (!this.options.createBucket) return Promise.resolve();
    this.bucketReady ??= (async () => {
      try {
        await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }));
      } catch {
        try {
          await this.client.send(new CreateBucketCommand({ Bucket: this.options.bucket }));
        } catch (err) {
          const name = (err as { name?: string }).name;
          if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
        }
      }
    })().catch((err: unknown) => {
      this.bucketReady = undefined;
      throw new StorageError(`could not create bucket ${this.options.bucket}`, { cause: err });
    });
    return this.bucketReady;
  }

  async put(key: string, bytes: Uint8Array, contentType: string): Promise<void> {
    assertSafeKey(key);
    await this.ensureBucket();
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.options.bucket, Key: key, Body: bytes, ContentType: contentType }),
      );
    } catch (cause) {
      throw new StorageError(`could not upload ${key} to bucket ${this.options.bucket}`, { cause });
    }
  }

  async get(key: string): Promise<StoredObject | null> {
    assertSafeKey(key);
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }));
      return {
        body: out.Body as Readable,
        contentType: out.ContentType ?? 'application/octet-stream',
        contentLength: out.ContentLength,
      };
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if ((err as { name?: string }).name === 'NoSuchKey' || status === 404) return null;
      throw new StorageError(`could not read ${key} from bucket ${this.options.bucket}`, { cause: err });
    }
  }

  async deletePrefix(prefix: string): Promise<void> {
    assertSafeKey(prefix.replace(/\/+$/, ''));
    try {
      let token: string | undefined;
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, ContinuationToken: token }));
        const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
        if (keys.length > 0) {
          await this.client.send(new DeleteObjectsCommand({ Bucket: this.options.bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (cause) {
      throw new StorageError(`could not delete ${prefix} from bucket ${this.options.bucket}`, { cause });
    }
  }

  presignedUrl(key: string): Promise<string> {
    assertSafeKey(key);
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.options.bucket, Key: key }), {
      expiresIn: this.options.presignTtlS,
    });
  }

  async check(): Promise<void> {
    await this.ensureBucket();
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }));
    } catch (cause) {
      throw new StorageError(`bucket ${this.options.bucket} is not reachable`, { cause });
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
