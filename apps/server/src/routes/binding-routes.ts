import type { BindingService } from "../services/binding-service.js";
import type { Handlers } from "./register-routes.js";

/** The org's service bindings: list and read for members, create, rotate and delete for admins. */
export function bindingHandlers(
  bindings: BindingService,
): Pick<
  Handlers,
  "listBindings" | "getBinding" | "createBinding" | "rotateBinding" | "deleteBinding"
> {
  return {
    listBindings: async ({ caller }) => ({ items: await bindings.list(caller) }),
    getBinding: async ({ caller, params }) => bindings.get(caller, params.name),
    createBinding: async ({ caller, body }) => bindings.create(caller, body),
    rotateBinding: async ({ caller, params, body }) => bindings.rotate(caller, params.name, body),
    deleteBinding: async ({ caller, params }) => bindings.delete(caller, params.name),
  };
}
