/** Hono's per-request variables for this app. */
export interface AppEnv {
  Variables: {
    /** The client connection's AbortSignal, captured before anything can replace c.req.raw. */
    clientSignal: AbortSignal;
  };
}
