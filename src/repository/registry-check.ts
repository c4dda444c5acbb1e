// docker-registry v1's image folders, read from a bucket's keys: an image caught mid-push when the
// bucket was copied (its `_inprogress` mark, or its json, layer or ancestry not there yet) comes
// back from a restore as one the registry will not serve.
const IMAGE_FILE = /^registry\/images\/([0-9a-f]{64})\/(json|layer|ancestry|_inprogress)$/;
const NEEDED = ['json', 'layer', 'ancestry'] as const;

/** Gathers the image files among a bucket's keys, one key at a time, and says what is amiss. */
export class RegistryImages {
  /** Image id → which of its files were seen. */
  private readonly images = new Map<string, Set<string>>();

  /** Notes `key` if it is one of an image's files; other keys are ignored. */
  add(key: string): void {
    const match = IMAGE_FILE.exec(key);
    if (match?.[1] === undefined || match[2] === undefined) return;
    let files = this.images.get(match[1]);
    if (files === undefined) {
      files = new Set();
      this.images.set(match[1], files);
    }
    files.add(match[2]);
  }

  /** One finding per image that was mid-push or lacks a file, in id order; none for other buckets. */
  findings(): string[] {
    const found: string[] = [];
    for (const id of [...this.images.keys()].sort()) {
      const files = this.images.get(id) ?? new Set();
      const missing = NEEDED.filter((file) => !files.has(file));
      if (files.has('_inprogress'))
        found.push(
          `image ${id} was being pushed when the bucket was copied (registry/images/${id}/_inprogress): restored, the registry will not serve it until its app is built again`,
        );
      else if (missing.length > 0)
        found.push(
          `image ${id} lacks its ${missing.join(', ')}: a release that names it cannot be pulled after a restore`,
        );
    }
    return found;
  }
}
