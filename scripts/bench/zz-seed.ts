import { S3Client } from '../../src/s3/client.js';
import { gatewayOptions, loadStack } from '../../test/fixtures/stack.js';
import { BIG_BUCKET, BIG_OBJECT, ensureExact } from './dataset.js';
const client = new S3Client({ ...gatewayOptions(loadStack()!), maxSockets: 8 });
await ensureExact(client, BIG_BUCKET, [BIG_OBJECT], (m: string) => console.log(m), 1);
