// Which file system a volume restore's destination is on, read from /proc/mounts' text.
import { describe, expect, it } from 'vitest';
import { fileSystemAt } from '../../src/store-mount.js';

const MOUNTS = [
  '/dev/vda9 / ext4 rw,relatime 0 0',
  'proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0',
  '10.0.0.1,10.0.0.2:/ /var/lib/deis/store ceph rw,relatime,name=admin,secret=<hidden> 0 0',
  'tmpfs /var/lib/deis/store/tmp tmpfs rw 0 0',
  'tmpfs /srv/with\\040space tmpfs rw 0 0',
  'tmpfs /srv/back\\134slash tmpfs rw 0 0',
  '',
].join('\n');

describe('fileSystemAt', () => {
  it('gives the type of the last mount at or above the path', () => {
    expect(fileSystemAt(MOUNTS, '/var/lib/deis/store')).toBe('ceph');
    expect(fileSystemAt(MOUNTS, '/var/lib/deis/store/logs/a.log')).toBe('ceph');
    expect(fileSystemAt(MOUNTS, '/var/lib/deis/store/tmp/x')).toBe('tmpfs');
    expect(fileSystemAt(MOUNTS, '/var/lib/deis/storefront')).toBe('ext4');
    expect(fileSystemAt(MOUNTS, '/var/lib/deis')).toBe('ext4');
  });

  it('takes the later of two mounts on one point, and reads escaped mount points', () => {
    const covered = `${MOUNTS}tmpfs /var/lib/deis/store tmpfs rw 0 0\n`;
    expect(fileSystemAt(covered, '/var/lib/deis/store/logs')).toBe('tmpfs');
    expect(fileSystemAt(MOUNTS, '/srv/with space/x')).toBe('tmpfs');
    expect(fileSystemAt(MOUNTS, '/srv/back\\slash/x')).toBe('tmpfs');
    expect(fileSystemAt(MOUNTS, '/srv/back')).toBe('ext4');
    expect(fileSystemAt('', '/var/lib/deis/store')).toBeUndefined();
    // A later mount on a parent hides the store's.
    const hidden = `${MOUNTS}tmpfs /var/lib/deis tmpfs rw 0 0\n`;
    expect(fileSystemAt(hidden, '/var/lib/deis/store/logs')).toBe('tmpfs');
  });
});
