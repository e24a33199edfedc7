/**
 * A small element builder. Text from the guard (reasons, comments, dataset
 * descriptions written by other people) is only ever set as text, never as
 * HTML, so it cannot inject markup into the lab.
 */

type Child = Node | string | null | undefined | false;

/** Attributes: strings set as attributes, `on*` functions as listeners. */
export type Attributes = Record<string, string | number | boolean | EventListener | undefined>;

/** `<tag attrs>children</tag>`; `false`/`undefined` attributes and children are skipped. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attributes = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, '');
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Replace all children of `node`. */
export function replaceChildren(node: Element, ...children: (Child | Child[])[]): void {
  const kept = children.flat().filter((c): c is Node | string => !!c || c === '');
  node.replaceChildren(...kept);
}
