/** Locations inside the installed package. */
import { fileURLToPath } from 'node:url';

/** The small model committed with Tandem, served when no --model is given. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../models/tandem-small', import.meta.url));

export const PACKAGE_JSON = fileURLToPath(new URL('../package.json', import.meta.url));
